"""Raw ASGI middleware for every request: request id and client facts, security
headers, body size limits, and a last-resort 500 that still speaks problem+json."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.context import META_KEY, RequestMeta
from mlgate.problems import PROBLEM_TYPE, problem_body

log = logging.getLogger("mlgate.access")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NetworkList = list[ipaddress.IPv4Network | ipaddress.IPv6Network]


def client_ip(scope: Scope, trusted: NetworkList) -> str:
    """The peer address, or with trusted proxies the right-most X-Forwarded-For hop that
    is not one of them (a client can prepend anything; it cannot append)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _in(peer, trusted):
        return str(peer)
    hops = [
        hop.strip()
        for value in Headers(scope=scope).getlist("x-forwarded-for")
        for hop in value.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop if _valid_ip(hop) else str(peer)
    return str(peer)


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _in(address: str, networks: NetworkList) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def send_problem(
    send: Send, scope: Scope, status: int, code: str, title: str, detail: str
) -> None:
    meta = scope.get(META_KEY)
    body = problem_body(
        status=status,
        code=code,
        title=title,
        detail=detail,
        request_id=meta.request_id if isinstance(meta, RequestMeta) else "-",
        path=scope.get("path", ""),
    )
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """Outermost: request id, client facts, security headers, access log, last-chance 500."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: list[str],
        on_finish: Callable[[Scope, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.trusted: NetworkList = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]
        self.on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope[META_KEY] = RequestMeta(
            request_id=request_id,
            ip=client_ip(scope, self.trusted),
            user_agent=headers.get("user-agent", "")[:512],
        )
        path: str = scope.get("path", "")
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = request_id
                out["X-Content-Type-Options"] = "nosniff"
                if path.startswith("/api/v1/auth"):
                    out["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error (request %s)", request_id)
            if not status_holder["started"]:
                await send_problem(
                    send_wrapper,
                    scope,
                    500,
                    "internal_error",
                    "Internal server error",
                    "An unexpected error occurred; it has been logged",
                )
        finally:
            if self.on_finish is not None:
                self.on_finish(scope, int(status_holder["status"]), time.perf_counter() - started)


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front or by counting chunks."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope.get("path", ""), self.default_limit)
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = True
            if too_big:
                await _drain_and_refuse(send, scope, limit)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # HTTPException passes through FastAPI's body parsing untouched.
                    raise HTTPException(413, detail=_too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> str:
    return f"The request body is larger than {limit} bytes"


async def _drain_and_refuse(send: Send, scope: Scope, limit: int) -> None:
    await send_problem(
        send, scope, 413, "payload_too_large", "Payload too large", _too_large(limit)
    )


def security_headers_for_docs(nonce: str) -> dict[str, Any]:
    return {
        "Content-Security-Policy": (
            "default-src 'none'; "
            f"script-src 'self' 'nonce-{nonce}'; "
            "style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; "
            "connect-src 'self'; "
            "worker-src 'self' blob:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ),
        "Referrer-Policy": "no-referrer",
    }
