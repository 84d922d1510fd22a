"""``rarefit api --workers 2`` for real.

Connections spread over both processes, a dead one comes back, SIGTERM stops all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launch.api_processes import bind_sockets, reuse_port_supported

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="needs SO_REUSEPORT")

REPO_ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 32
METRICS_TOKEN = "api-processes-metrics-token"


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def api_children(parent: int) -> list[int]:
    """The spawned API processes of ``parent`` (not multiprocessing's helper processes)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            children.append(int(stat.parent.name))
    return sorted(children)


def established_connections(pid: int, port: int) -> int:
    """Sockets of ``pid`` that are established connections to local ``port`` (from /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                count += 1
    return count


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def healthz_count(url: str) -> float:
    """``GET /healthz`` answers counted in a scrape of ``/metrics`` (a new connection each time)."""
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10.0)
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "rarefit_http_requests_total" and labels.get("route") == "/healthz":
                return sample.value if labels.get("status") == "200" else 0.0
    return 0.0


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_bind_sockets_share_one_port_and_report_a_taken_one() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and ports != {0}
        with socket.socket() as plain:  # a listener without SO_REUSEPORT owns its port alone
            plain.bind(("127.0.0.1", 0))
            plain.listen()
            with pytest.raises(OSError):
                bind_sockets("127.0.0.1", plain.getsockname()[1], 2)
    finally:
        for sock in sockets:
            sock.close()
    with pytest.raises(ValueError, match="count"):
        bind_sockets("127.0.0.1", 0, 0)


def test_two_api_processes_share_connections_restart_and_stop(
    sqlite_settings, free_port, rarefit_cmd, tmp_path, request: pytest.FixtureRequest
) -> None:
    settings = sqlite_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAREFIT_")}
    env.update(RAREFIT_DATA_DIR=str(settings.data_dir), PYTHONUNBUFFERED="1", RAREFIT_METRICS_TOKEN=METRICS_TOKEN)
    subprocess.run([*rarefit_cmd, "migrate"], cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=120)
    url = f"http://127.0.0.1:{free_port}"
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        parent = subprocess.Popen(
            [*rarefit_cmd, "api", "--host", "127.0.0.1", "--port", str(free_port), "--workers", "2"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: len(api_children(parent.pid)) == 2 and ready(url), timeout=180, what="two API processes")
        children = api_children(parent.pid)

        # Keep-alive connections, as a poller holds them: the kernel hashes each to one process.
        clients = []
        for _ in range(CONNECTIONS):
            client = httpx.Client(base_url=url, timeout=10.0)
            assert client.get("/healthz").status_code == 200
            clients.append(client)
        per_process = [established_connections(pid, free_port) for pid in children]
        assert sum(per_process) == CONNECTIONS and min(per_process) > 0, per_process  # all on one: p = 2**-31
        for client in clients:
            client.close()
        # Whichever process answers a scrape, it reports the requests both processes served.
        assert [healthz_count(url) for _ in range(6)] == [CONNECTIONS] * 6
        metrics_dir = Path(process_environment(children[0])["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir()

        os.kill(children[0], signal.SIGKILL)
        wait_for(
            lambda: children[0] not in api_children(parent.pid) and len(api_children(parent.pid)) == 2 and ready(url),
            timeout=180,
            what="the killed API process to be replaced",
        )
        assert parent.poll() is None
        assert healthz_count(url) == CONNECTIONS  # the killed process's counts survive it

        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0
        assert api_children(parent.pid) == [] and not ready(url)
        assert not metrics_dir.exists()
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        request.node.add_report_section("call", "rarefit api log", log_path.read_text(errors="replace")[-8000:])
