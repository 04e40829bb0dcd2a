"""A tracking server that hiccups on demand: an HTTP proxy on 127.0.0.1 in front of a real
one, which answers some requests itself instead of forwarding them.

    proxy = FlakyProxy("http://127.0.0.1:5000")      # serves at proxy.uri
    proxy.unavailable = 5                  # the next 5 requests: 503 Service Unavailable
    proxy.unavailable = math.inf           # every request from now on
    proxy.drop_answer_of = "/runs/create"  # forward the next such request, then hang up
    proxy.stop()

Without a target it only answers: `proxy.answer(status, body)` gives every request that
status and body. `proxy.log` lists what happened to each request: (method, path, what),
`what` being the status sent, or "dropped".
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Headers that describe one hop's connection, not the message: never forwarded.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FlakyProxy:
    """See the module docstring."""

    def __init__(self, target: str | None = None):
        self.target = urllib.parse.urlsplit(target) if target else None
        self.unavailable: float = 0
        self.drop_answer_of: str | None = None
        self.fixed: tuple[int, bytes] | None = None
        self.log: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def answer(self, status: int, body: bytes) -> None:
        """Answer every request with `status` and `body` (JSON if it starts with `{`)."""
        self.fixed = (status, body)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _decide(self, path: str) -> str:
        """What to do with a request: "unavailable", "drop" (after forwarding), "fixed"
        or "forward"; counts it against the failures still to come."""
        with self._lock:
            if self.unavailable > 0:
                self.unavailable -= 1
                return "unavailable"
            if self.fixed is not None:
                return "fixed"
            if self.drop_answer_of is not None and self.drop_answer_of in path:
                self.drop_answer_of = None
                return "drop"
            return "forward"

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.target.hostname, self.target.port,
                                                timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            connection.close()

    def _handler_class(self) -> type:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                what = proxy._decide(self.path)
                if what == "unavailable":
                    self._send(503, [("Content-Type", "text/plain")],
                               b"proxy: service unavailable")
                elif what == "fixed":
                    status, text = proxy.fixed
                    kind = "application/json" if text.startswith(b"{") else "text/plain"
                    self._send(status, [("Content-Type", kind)], text)
                else:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_HEADERS}
                    status, reply_headers, reply = proxy._forward(
                        self.command, self.path, headers, body)
                    if what == "drop":  # applied by the server; the answer is lost
                        proxy.log.append((self.command, self.path, "dropped"))
                        self.close_connection = True
                        return
                    self._send(status, [(k, v) for k, v in reply_headers
                                        if k.lower() not in HOP_HEADERS], reply)

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes
                      ) -> None:
                proxy.log.append((self.command, self.path, status))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: `proxy.log` keeps what the tests need."""

        return Handler

