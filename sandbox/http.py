"""A small threaded HTTP(S) server on loopback for the sandbox's WSGI apps.

Each stand-in (Google OAuth, Gmail API, Microsoft identity) is a plain WSGI callable; a
:class:`PrefixRouter` mounts several on one server, and :class:`LoopbackServer` serves it in a
background thread on an ephemeral (or given) port.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    tls_handshake_timeout = 10.0

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread: done in the accept loop,
        # one client that connects and stays silent (a port probe) would stall the whole server.
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.tls_handshake_timeout)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ValueError):
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class PrefixRouter:
    """Dispatch to the WSGI app mounted at the longest matching path prefix."""

    def __init__(self, mounts: dict[str, WSGIApp]) -> None:
        self.mounts = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.mounts:
            if path.startswith(prefix):
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}}']


class LoopbackServer:
    """Serve ``app`` on 127.0.0.1 in a daemon thread; HTTPS when an SSL context is given."""

    def __init__(self, app: WSGIApp, *, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.httpd = make_server("127.0.0.1", port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.scheme = "http"
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name=f"sandbox:{self.port}")

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
