"""A fault-injecting HTTP proxy in front of the moto server: AWS as it misbehaves.

Clients (boto3, S3A's AWS SDK) are pointed at the proxy's endpoint; it forwards each request to the
moto server unchanged, except the ones a rule picks, which get one of:

- SLOW_DOWN: S3's `503 SlowDown` (the request does not reach the server);
- RESET: the connection is reset before any response (the request does not reach the server);
- LOST_RESPONSE: the request is carried out by the server, then the connection is reset instead of
  answering (a lost response: the client cannot tell it from RESET);
- ACCESS_DENIED: a JSON-protocol service's (EMR's) `400 AccessDeniedException`, as IAM answers a
  call the identity's policy does not allow (the request does not reach the server).

A rule picks requests by service (from the SigV4 credential scope), operation (the JSON protocol's
X-Amz-Target, e.g. EMR's `AddJobFlowSteps`) and a piece of the User-Agent (the amazon provider's
hooks put `Caller/<operator class>` in it), every n-th matching request, at most `limit` times.
Each fault is recorded with the client that got it (`Boto3`, `S3A`, ...).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .moto import certificate_of

SLOW_DOWN, RESET, LOST_RESPONSE, ACCESS_DENIED = "slow_down", "reset", "lost_response", "access_denied"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect"}
SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")
DENIED_BODY = b'{"__type": "AccessDeniedException", "message": "not authorized (fault_proxy)"}'
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


@dataclass
class Rule:
    """Fault every `every`-th request of `service` (and `operation`, and a User-Agent holding `caller`,
    if given), at most `limit` times. `kinds` are used in turn (e.g. SLOW_DOWN, RESET, SLOW_DOWN, ...)."""

    service: str
    kinds: tuple[str, ...]
    operation: str | None = None
    caller: str | None = None
    every: int = 1
    limit: int | None = None
    seen: int = 0
    applied: int = 0

    def pick(self, service: str, operation: str | None, user_agent: str = "") -> str | None:
        if service != self.service or (self.operation and operation != self.operation):
            return None
        if self.caller and self.caller not in user_agent:
            return None
        self.seen += 1
        if self.seen % self.every or (self.limit is not None and self.applied >= self.limit):
            return None
        self.applied += 1
        return self.kinds[(self.applied - 1) % len(self.kinds)]


@dataclass
class FaultProxy:
    """The running proxy: its endpoint, its rules (changeable while it runs) and what it did."""

    endpoint: str
    rules: list[Rule] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)  # (service, operation or None, kind, client) -> count
    forwarded: Counter = field(default_factory=Counter)  # (service, client) -> count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def choose(self, service: str, operation: str | None, user_agent: str = "") -> str | None:
        with self.lock:
            for rule in self.rules:
                kind = rule.pick(service, operation, user_agent)
                if kind:
                    return kind
        return None

    def count(self, kind: str | None = None, service: str | None = None, operation: str | None = None,
              client: str | None = None) -> int:
        """How many faults of that kind (service, operation, client: None for any) were injected."""
        return sum(n for (s, o, k, c), n in self.faults.items()
                   if (kind is None or k == kind) and (service is None or s == service)
                   and (operation is None or o == operation) and (client is None or c == client))


def client_of(user_agent: str) -> str:
    if "Hadoop" in user_agent or "aws-sdk-java" in user_agent:
        return "S3A"
    if "Boto3/" in user_agent or "Botocore/" in user_agent:
        return "Boto3"
    return user_agent.split("/", 1)[0] or "unknown"


def _service_of(headers) -> str:
    found = _SCOPE.search(headers.get("Authorization", ""))
    return found.group(1) if found else "unknown"


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(proxy: FaultProxy, upstream: str):
    target = urlsplit(upstream)
    context = None
    if target.scheme == "https":
        verify = certificate_of(upstream)
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST, no response
            self.close_connection = True

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            if context is not None:
                upstream_connection = http.client.HTTPSConnection(target.hostname, target.port, context=context,
                                                                  timeout=120)
            else:
                upstream_connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream_connection.request(self.command, self.path, body=body, headers=headers)
                response = upstream_connection.getresponse()
                data = response.read()
                return response.status, response.reason, response.getheaders(), data
            finally:
                upstream_connection.close()

        def _handle(self) -> None:
            body = _read_body(self)
            service = _service_of(self.headers)
            target_header = self.headers.get("X-Amz-Target", "")
            operation = target_header.rsplit(".", 1)[-1] if target_header else None
            user_agent = self.headers.get("User-Agent", "")
            client = client_of(user_agent)
            kind = proxy.choose(service, operation, user_agent)
            if kind:
                with proxy.lock:
                    proxy.faults[(service, operation, kind, client)] += 1
            if kind == RESET:
                return self._reset()
            if kind in (SLOW_DOWN, ACCESS_DENIED):
                status, content_type, answer = ((503, "application/xml", SLOW_DOWN_BODY) if kind == SLOW_DOWN
                                                else (400, "application/x-amz-json-1.1", DENIED_BODY))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":  # an answer to HEAD has no body, whatever its Content-Length
                    self.wfile.write(answer)
                return None
            status, reason, headers, data = self._forward(body)
            with proxy.lock:
                proxy.forwarded[(service, client)] += 1
            if kind == LOST_RESPONSE:
                return self._reset()
            self.send_response(status, reason)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and not (name.lower() == "content-length" and self.command != "HEAD"):
                    self.send_header(name, value)
            if self.command != "HEAD":  # a HEAD answer keeps the object's Content-Length
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return None

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's names

    return Handler


@contextmanager
def running_fault_proxy(upstream: str, rules: list[Rule] | None = None) -> Iterator[FaultProxy]:
    """A proxy on a free local port (plain HTTP) forwarding to `upstream` (a moto endpoint, HTTP or
    HTTPS) while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    proxy = FaultProxy(f"http://127.0.0.1:{server.server_address[1]}", list(rules or []))
    server.RequestHandlerClass = _handler(proxy, upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
