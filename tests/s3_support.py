"""A real S3 HTTP endpoint for the tests: moto's standalone server in a subprocess on 127.0.0.1.

Nothing is mocked inside the process under test: boto3 talks HTTP to the
server exactly as it would to MinIO or AWS. The server keeps its objects in
memory, so an outage is simulated in front of it (a cuttable TCP proxy),
never by restarting it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "rarefit-test",
    "AWS_SECRET_ACCESS_KEY": "rarefit-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
READY_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on a free port; ``new_bucket()`` makes an empty bucket per test."""

    def __init__(self, *, log_path: Path) -> None:
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **CREDENTIALS}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited:\n{self.log_path.read_text(errors='replace')}")
            try:
                httpx.get(f"{self.endpoint_url}/moto-api/", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"moto server not ready after {READY_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def client(self, endpoint_url: str | None = None):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint_url or self.endpoint_url)

    def new_bucket(self) -> str:
        name = f"rarefit-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, *, bucket: str, prefix: str = "blobs", endpoint_url: str | None = None) -> dict[str, str]:
        """The environment a rarefit process needs to use ``bucket`` on this server."""
        return {
            **CREDENTIALS,
            "RAREFIT_STORAGE_URL": f"s3://{bucket}/{prefix}",
            "RAREFIT_S3_ENDPOINT_URL": endpoint_url or self.endpoint_url,
        }
