"""Tenant resolution for WebSockets, and the one helper through which consumers touch the database.

Channels does not run Django middleware, and `database_sync_to_async` runs ORM code on another thread
whose connection still points at `public` (django-tenants#767, #1168). So the tenant is resolved here from
the WebSocket's Host header into `scope["tenant"]`, and every ORM call of a consumer goes through
`tenant_database_sync_to_async`, which activates that schema in the worker thread for the call and restores
the previous one after it. A connection on an unknown host is closed before the handshake completes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django_tenants.utils import schema_context

from apps.tenants.selectors import TenantRef, hostname_normalize, tenant_for_host, tenant_ref

# Application close codes (4000-4999 are ours per RFC 6455): the client can tell these apart from drops.
CLOSE_UNKNOWN_TENANT = 4404
CLOSE_TENANT_NOT_READY = 4503
CLOSE_FOREIGN_ORIGIN = 4403

P = ParamSpec("P")
R = TypeVar("R")


def _scope_header(scope: dict, header: bytes) -> str:
    for name, value in scope.get("headers", []):
        if name == header:
            return value.decode("latin-1")
    return ""


def _scope_host(scope: dict) -> str:
    return _scope_header(scope, b"host")


def _origin_is_foreign(scope: dict) -> bool:
    """A browser always sends Origin on a WebSocket handshake; one naming another host than the one that
    selected the tenant is another site using the visitor's cookies (cross-site WebSocket hijacking).
    Clients that send no Origin (servers, CLI tools) carry no ambient cookies of a victim and pass. Host
    names are compared (case-insensitively); scheme and port are not, as a TLS proxy in front changes them."""
    origin = _scope_header(scope, b"origin")
    if not origin:
        return False
    origin_host = urlsplit(origin).netloc
    return not origin_host or hostname_normalize(origin_host) != hostname_normalize(_scope_host(scope))


async def _reject(receive, send, code: int) -> None:
    # Answer the handshake with a close: the ASGI server turns this into an HTTP 403 for the client.
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": code})


class TenantWebSocketMiddleware:
    """ASGI middleware: put the TenantRef of the Host header into the scope, or refuse the connection."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if _origin_is_foreign(scope):
            return await _reject(receive, send, CLOSE_FOREIGN_ORIGIN)
        tenant = await database_sync_to_async(tenant_for_host)(_scope_host(scope))
        if tenant is None:
            return await _reject(receive, send, CLOSE_UNKNOWN_TENANT)
        if not tenant.ready or tenant.schema_name == "public":
            return await _reject(receive, send, CLOSE_TENANT_NOT_READY if not tenant.ready else CLOSE_UNKNOWN_TENANT)
        return await self.inner({**scope, "tenant": tenant_ref(tenant)}, receive, send)


async def tenant_run(tenant: TenantRef, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run the synchronous `fn` in a database thread with `tenant`'s schema active."""

    def in_schema() -> R:
        with schema_context(tenant.schema_name):
            return fn(*args, **kwargs)

    return await database_sync_to_async(in_schema)()


def tenant_database_sync_to_async(method: Callable[..., R]) -> Callable[..., Awaitable[R]]:
    """Decorator for consumer methods doing ORM work: runs them in the scope's tenant schema."""

    @functools.wraps(method)
    async def wrapper(self, *args: Any, **kwargs: Any) -> R:
        return await tenant_run(self.scope["tenant"], method, self, *args, **kwargs)

    return wrapper


def tenant_group_name(tenant: TenantRef, name: str) -> str:
    """A channel-layer group name that can only ever reach this tenant's connections."""
    return f"t{tenant.id}.{name}"[:99]  # channels limits group names to 100 characters
