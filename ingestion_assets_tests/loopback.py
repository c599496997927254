"""A real HTTP server on 127.0.0.1 whose routes tests program: files, errors, redirects,
bodies cut short, endless or slow bodies. No mocked client: the bytes cross a socket."""

from __future__ import annotations

import contextlib
import gzip
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Handler = Callable[[BaseHTTPRequestHandler], None]


class LoopbackServer:
    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None):
        """`host`: any address of the loopback interface (127.0.0.0/8); `tls`: a certificate
        and its key, to serve https."""
        self.host = host
        self.scheme = "https" if tls else "http"
        self.routes: dict[str, Handler] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                server.hits[path] += 1
                handler = server.routes.get(path) or server.routes.get(self.path)
                if handler is None:
                    send(self, 404, b"not found", "text/plain")
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    handler(self)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), _RequestHandler)
        self.httpd.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def send(req: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str, headers=None):
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    req.end_headers()
    req.wfile.write(body)


def file_body(body: bytes, content_type="application/octet-stream", headers=None) -> Handler:
    return lambda req: send(req, 200, body, content_type, headers)


def status(code: int, body: bytes = b"error") -> Handler:
    return lambda req: send(req, code, body, "text/plain")


def html_page(
    body: bytes = b"<!DOCTYPE html><html><head><title>Sign in - Google Accounts</title></head></html>",
):
    return lambda req: send(req, 200, body, "text/html; charset=utf-8")


def redirect(location: str, code: int = 302) -> Handler:
    def handler(req):
        req.send_response(code)
        req.send_header("Location", location)
        req.send_header("Content-Length", "0")
        req.end_headers()

    return handler


def gzipped(body: bytes, content_type="text/csv") -> Handler:
    packed = gzip.compress(body)
    return lambda req: send(req, 200, packed, content_type, {"Content-Encoding": "gzip"})


def without_length(body: bytes, chunk: int = 65536) -> Handler:
    """HTTP/1.0-style body: no Content-Length, ends when the connection closes."""

    def handler(req):
        req.close_connection = True
        req.send_response(200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Connection", "close")
        req.end_headers()
        for start in range(0, len(body), chunk):
            req.wfile.write(body[start : start + chunk])

    return handler


def cut_short(body: bytes, claimed: int) -> Handler:
    """Announce `claimed` bytes, send `body`, hang up."""

    def handler(req):
        req.close_connection = True
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.send_header("Content-Length", str(claimed))
        req.end_headers()
        req.wfile.write(body)
        req.wfile.flush()

    return handler


def endless(chunk: bytes = b"x" * 65536, delay: float = 0.0) -> Handler:
    """A body that never ends (or drips slowly, with `delay` between chunks)."""

    def handler(req):
        req.close_connection = True
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.end_headers()
        while True:
            req.wfile.write(chunk)
            req.wfile.flush()
            if delay:
                time.sleep(delay)

    return handler


class Drip:
    """A slow body that does end: `count` chunks with `delay` between them (no Content-Length,
    the connection's close ends it). Records the chunks written and whether the body was sent
    to its end, so a test can tell a client that stopped reading from one that got it all."""

    def __init__(self, chunk: bytes, delay: float, count: int, content_type: str = "text/csv"):
        self.chunk, self.delay, self.count, self.content_type = chunk, delay, count, content_type
        self.sent = 0  # chunks written
        self.finished = False  # every chunk written: the whole body went out

    @property
    def size(self) -> int:
        return len(self.chunk) * self.count

    def __call__(self, req: BaseHTTPRequestHandler) -> None:
        req.close_connection = True
        req.send_response(200)
        req.send_header("Content-Type", self.content_type)
        req.end_headers()
        for _ in range(self.count):
            req.wfile.write(self.chunk)
            req.wfile.flush()
            self.sent += 1
            time.sleep(self.delay)
        self.finished = True


def stall(seconds: float) -> Handler:
    """Accept the request, say nothing for `seconds`."""

    def handler(req):
        time.sleep(seconds)
        send(req, 200, b"late", "text/csv")

    return handler


def fail_then(failures: int, code: int, then: Handler) -> Handler:
    """Answer `code` for the first `failures` requests, then hand over to `then`."""
    calls = {"n": 0}

    def handler(req):
        calls["n"] += 1
        if calls["n"] <= failures:
            send(req, code, b"temporarily unavailable", "text/plain")
        else:
            then(req)

    return handler


class ConditionalFile:
    """A file served with validators, as most web servers do: an ETag and/or Last-Modified,
    and a 304 without a body when the request's If-None-Match / If-Modified-Since still match.
    `honour=False`: a server that sends validators but always answers 200 with the body.
    Records each request's conditional headers and the body bytes sent."""

    def __init__(
        self,
        body: bytes,
        etag: str | None = '"v1"',
        last_modified: str | None = None,
        honour: bool = True,
    ):
        self.body, self.etag, self.last_modified, self.honour = body, etag, last_modified, honour
        self.asked: list[dict[str, str]] = []  # each request's conditional headers
        self.bytes_sent = 0

    def change(self, body: bytes, etag: str | None = None, last_modified: str | None = None):
        self.body, self.etag, self.last_modified = body, etag, last_modified

    def __call__(self, req: BaseHTTPRequestHandler) -> None:
        conditional = {
            name: req.headers[name]
            for name in ("If-None-Match", "If-Modified-Since")
            if req.headers.get(name)
        }
        self.asked.append(conditional)
        validators = {
            name: value
            for name, value in (("ETag", self.etag), ("Last-Modified", self.last_modified))
            if value
        }
        unchanged = (
            conditional.get("If-None-Match") == self.etag
            if self.etag and "If-None-Match" in conditional
            else bool(self.last_modified)
            and conditional.get("If-Modified-Since") == self.last_modified
        )
        if self.honour and unchanged:
            req.send_response(304)
            for name, value in validators.items():
                req.send_header(name, value)
            req.end_headers()
            return
        self.bytes_sent += len(self.body)
        send(req, 200, self.body, "text/csv", validators)
