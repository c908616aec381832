"""The one place that talks to LiveKit's server API, and the one place that names rooms for LiveKit.

Failure modes it prevents:
- Two tenants' rooms meeting in one LiveKit server: every name sent to LiveKit is `<schema>--<room>`
  (schema names hold only a-z, 0-9 and _, and room names have no "--", so the split is unambiguous), and
  `livekit_room_parse` maps a LiveKit name back to exactly one tenant schema and room.
- A slow or dead LiveKit hanging a web worker: every call has a short total timeout, and the SDK's region
  failover (LiveKit Cloud only) is off, so one call is one request.
- The SDK picking up credentials from the process environment: key, secret and URL always come from
  settings and are passed explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
from asgiref.sync import async_to_sync
from django.conf import settings
from livekit import api as lk
from livekit.api.room_service import RoomService

# Separator between the tenant's schema and the room name in LiveKit's room name.
LIVEKIT_NAME_SEPARATOR = "--"
# A LiveKit call answers in milliseconds when the server is up; seconds mean it is not.
LIVEKIT_TIMEOUT_S = 5
# A room LiveKit created for us closes this long after its last participant left (LiveKit's default is
# 5 minutes; a scheduled meeting whose host arrives late should still find it).
LIVEKIT_EMPTY_TIMEOUT_S = 15 * 60

# host[:port] as it may appear in a CSP source (no credentials, paths or separators).
_CSP_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_LIVEKIT_NAME_RE = re.compile(r"^([a-z][a-z0-9_]{0,62})--((?!.*--)[a-z0-9][a-z0-9_-]{0,62})$")

T = TypeVar("T")


class LiveKitError(Exception):
    """LiveKit refused a call or could not be reached; the message is safe to show to an admin."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class LiveKitRoom:
    sid: str
    name: str
    num_participants: int


@dataclass(frozen=True)
class LiveKitParticipant:
    identity: str
    name: str
    sid: str


def livekit_configured() -> bool:
    return bool(settings.LIVEKIT_URL and settings.LIVEKIT_API_KEY and settings.LIVEKIT_API_SECRET)


def livekit_browser_url() -> str:
    """The URL browsers connect to (ws/wss); defaults to LIVEKIT_URL with an http(s) scheme turned into ws(s)."""
    url = settings.LIVEKIT_PUBLIC_URL or settings.LIVEKIT_URL
    if url.startswith("http://") or url.startswith("https://"):
        url = "ws" + url[len("http"):]
    return url


def livekit_csp_sources() -> tuple[str, ...]:
    """connect-src sources the meeting page needs: the LiveKit origin over WebSocket and HTTP(S) (the
    client validates the connection and fetches regions over HTTP before the WebSocket)."""
    parts = urlsplit(livekit_browser_url())
    if parts.scheme not in {"ws", "wss"} or not _CSP_HOST_RE.match(parts.netloc):
        return ()  # not a URL a browser could use; nothing an operator typo could inject into the policy
    http = "https" if parts.scheme == "wss" else "http"
    return (f"{parts.scheme}://{parts.netloc}", f"{http}://{parts.netloc}")


def livekit_room_name(schema_name: str, room_name: str) -> str:
    return f"{schema_name}{LIVEKIT_NAME_SEPARATOR}{room_name}"


def livekit_room_parse(livekit_name: str) -> tuple[str, str] | None:
    """(schema, room) of a namespaced LiveKit room name; None for a name that is not one of ours."""
    match = _LIVEKIT_NAME_RE.match(livekit_name or "")
    return (match.group(1), match.group(2)) if match else None


def _run(call: Callable[[RoomService], Awaitable[T]], what: str) -> T:
    if not livekit_configured():
        raise LiveKitError("video is not configured (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)")

    async def run() -> T:
        async with lk.LiveKitAPI(
            url=settings.LIVEKIT_URL,
            api_key=settings.LIVEKIT_API_KEY,
            api_secret=settings.LIVEKIT_API_SECRET,
            timeout=aiohttp.ClientTimeout(total=LIVEKIT_TIMEOUT_S),
            failover=False,
        ) as client:
            return await call(client.room)

    try:
        return async_to_sync(run)()
    except lk.ServerError as exc:
        raise LiveKitError(f"LiveKit refused {what}: {exc.code} {exc.message}".strip(),
                           code=exc.code, status=exc.status) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LiveKitError(f"LiveKit could not be reached for {what} ({type(exc).__name__})") from None


def livekit_room_create(*, name: str, max_participants: int, metadata: str = "") -> LiveKitRoom:
    """CreateRoom (LiveKit answers with the existing room when the name is taken: idempotent)."""
    request = lk.CreateRoomRequest(
        name=name, max_participants=max_participants, empty_timeout=LIVEKIT_EMPTY_TIMEOUT_S, metadata=metadata
    )
    room = _run(lambda service: service.create_room(request), "creating the room")
    return LiveKitRoom(sid=room.sid, name=room.name, num_participants=room.num_participants)


def livekit_room_delete(*, name: str) -> bool:
    """DeleteRoom: disconnects everyone. False when LiveKit did not know the room (already gone)."""
    try:
        _run(lambda service: service.delete_room(lk.DeleteRoomRequest(room=name)), "closing the room")
    except LiveKitError as exc:
        if exc.code == lk.ServerErrorCode.NOT_FOUND:
            return False
        raise
    return True


def livekit_participants(*, name: str) -> list[LiveKitParticipant]:
    try:
        response = _run(
            lambda service: service.list_participants(lk.ListParticipantsRequest(room=name)), "listing participants"
        )
    except LiveKitError as exc:
        if exc.code == lk.ServerErrorCode.NOT_FOUND:
            return []
        raise
    return [LiveKitParticipant(identity=p.identity, name=p.name, sid=p.sid) for p in response.participants]
