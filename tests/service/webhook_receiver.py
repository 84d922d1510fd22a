"""A real HTTP receiver on 127.0.0.1 that records what it is sent and can fail on purpose."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    failures_left: int = 0


def start_receiver(*, fail_first: int = 0) -> tuple[Receiver, ThreadingHTTPServer]:
    """A receiver answering 500 to its first ``fail_first`` requests and 200 after."""
    receiver = Receiver(url="", failures_left=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            receiver.requests.append(Received(headers={k.lower(): v for k, v in self.headers.items()}, body=body))
            failing = receiver.failures_left > 0
            receiver.failures_left -= int(failing)
            self.send_response(500 if failing else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server
