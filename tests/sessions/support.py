"""A small client of General Bots' chat protocol (spec 6.2-6.4) over the real `websockets` library and httpx.

It speaks to a live daphne on 127.0.0.1 while naming the tenant's host in the `Host` header, as a browser on
`<tenant host>:<port>` would. Tests and the chat benchmark share it.

    client = ChatClient(port, "chat.test.localhost")
    ids = await client.bootstrap("garden")                       # GET /api/auth?bot_name=
    async with client.connect("garden", ids) as sock:            # /ws?session_id=&user_id=&bot_name=
        connected = await sock.next()                            # {"type": "connected", ...}
        texts = await sock.bot_texts(2)                          # the next two complete bot messages
        await sock.send("Opening hours")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect

# How long a test waits for one expected frame before failing (a turn through the fake LLM takes ms;
# the machine is shared and slow at times).
FRAME_TIMEOUT_S = 15.0
# How long "nothing more arrives" is watched for.
QUIET_S = 0.6
# Our frames can carry long answers; a client refusing big frames would hide a server bug as a close.
CLIENT_MAX_FRAME = 4 * 1024 * 1024


# --- frame kinds (spec 6.4; `role: user` frames are our replay/echo extension) ---------------------------


def is_connected(frame: dict) -> bool:
    return frame.get("type") == "connected"


def is_error(frame: dict) -> bool:
    return frame.get("type") == "error"


def is_user(frame: dict) -> bool:
    return frame.get("role") == "user"


def is_thinking(frame: dict) -> bool:
    return bool(frame.get("thinking"))


def is_delta(frame: dict) -> bool:
    """A streamed piece of an answer (is_complete false, some text)."""
    return (frame.get("message_type") == 2 and frame.get("is_complete") is False and not frame.get("thinking")
            and bool(frame.get("content")))


def is_suggestions(frame: dict) -> bool:
    return frame.get("message_type") == 2 and frame.get("is_complete") is True and bool(frame.get("suggestions"))


def is_bot_message(frame: dict) -> bool:
    """A complete bot message (a TALK, an answer, or the end of a streamed answer): it carries its index."""
    return (frame.get("message_type") == 2 and frame.get("is_complete") is True and "message_index" in frame
            and not is_user(frame))


def bot_text(frame: dict) -> str:
    """The whole text of a complete bot message (a streamed answer's end frame carries it in full_content)."""
    return frame.get("full_content") if frame.get("full_content") is not None else frame.get("content", "")


def message_index(frame: dict) -> int | None:
    return frame.get("message_index")


@dataclass
class ChatSocket:
    """One WebSocket to the chat; every frame received is kept in `frames` (in order)."""

    ws: ClientConnection
    frames: list[dict] = field(default_factory=list)
    _cursor: int = 0

    async def send(self, content: str, message_type: int = 1, **extra: object) -> None:
        await self.ws.send(json.dumps({"content": content, "message_type": message_type, "channel": "web",
                                       **extra}))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def _receive(self, timeout: float) -> dict:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def next(self, timeout: float = FRAME_TIMEOUT_S) -> dict:
        """The next frame not yet consumed by next()/until()."""
        if self._cursor < len(self.frames):
            frame = self.frames[self._cursor]
        else:
            frame = await self._receive(timeout)
        self._cursor += 1
        return frame

    async def until(self, predicate: Callable[[dict], bool], timeout: float = FRAME_TIMEOUT_S) -> list[dict]:
        """Frames up to and including the first that matches `predicate`."""
        deadline = time.monotonic() + timeout
        seen: list[dict] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; got {seen}")
            try:
                frame = await self.next(remaining)
            except TimeoutError:
                raise AssertionError(f"no matching frame within {timeout} s; got {seen}") from None
            seen.append(frame)
            if predicate(frame):
                return seen

    async def bot_messages(self, count: int, timeout: float = FRAME_TIMEOUT_S) -> list[dict]:
        """The next `count` complete bot messages (other frames are skipped but kept in `frames`)."""
        found: list[dict] = []
        while len(found) < count:
            found.append((await self.until(is_bot_message, timeout))[-1])
        return found

    async def bot_texts(self, count: int, timeout: float = FRAME_TIMEOUT_S) -> list[str]:
        return [bot_text(f) for f in await self.bot_messages(count, timeout)]

    async def quiet(self, seconds: float = QUIET_S) -> list[dict]:
        """Whatever arrives within `seconds` (for "nothing more is sent" checks)."""
        got: list[dict] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.next(remaining))
            except TimeoutError:
                break
        return got

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class ChatClient:
    """The chat of one tenant host on a live server at 127.0.0.1:`port`."""

    port: int
    host: str

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http_base, headers={"Host": f"{self.host}:{self.port}"},
                                 timeout=FRAME_TIMEOUT_S, **kwargs)

    async def bootstrap(self, bot_name: str, *, user_id: str | None = None,
                        session_id: str | None = None) -> dict:
        """GET /api/auth (spec 6.2): {"user_id", "session_id", "bot_id", "bot_name", "status"}."""
        params = {"bot_name": bot_name, **({"user_id": user_id} if user_id else {}),
                  **({"session_id": session_id} if session_id else {})}
        async with self.http() as http:
            response = await http.get("/api/auth", params=params)
        response.raise_for_status()
        return response.json()

    def ws_url(self, bot_name: str | None, ids: dict | None = None, *, last_index: int | None = None,
               path: str = "/ws") -> str:
        query: dict[str, object] = {}
        if ids:
            query.update(session_id=ids["session_id"], user_id=ids["user_id"])
        if bot_name is not None:
            query["bot_name"] = bot_name
        if last_index is not None:
            query["last_index"] = last_index
        return f"ws://{self.host}:{self.port}{path}" + (f"?{urlencode(query)}" if query else "")

    async def open(self, bot_name: str | None, ids: dict | None = None, *, last_index: int | None = None,
                   path: str = "/ws", origin: str | None = None, **kwargs: object) -> ChatSocket:
        # The URL names the tenant's host (the Host header); the TCP connection goes to loopback.
        ws = await connect(self.ws_url(bot_name, ids, last_index=last_index, path=path), host="127.0.0.1",
                           port=self.port, origin=origin, proxy=None, max_size=CLIENT_MAX_FRAME,
                           open_timeout=FRAME_TIMEOUT_S, **kwargs)
        return ChatSocket(ws)

    @contextlib.asynccontextmanager
    async def connect(self, bot_name: str | None, ids: dict | None = None, **kwargs: object
                      ) -> AsyncIterator[ChatSocket]:
        sock = await self.open(bot_name, ids, **kwargs)
        try:
            yield sock
        finally:
            await sock.close()


async def socket_closed(layer, group: str, channel: str) -> None:
    """What a closing consumer does to the layer: leave its group, stop receiving (which unsubscribes)."""
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.group_discard(group, channel)
    receiving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiving
