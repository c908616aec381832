"""A small LiveKit server API of our own, on loopback, for tests.

LiveKit's server API is Twirp over HTTP: `POST /twirp/livekit.RoomService/<Method>`. livekit-api sends
protobuf (`Content-Type: application/protobuf`) and reads protobuf back; JSON (`application/json`) is
served too, as a real Twirp server does. Requests are decoded and answered with the message classes of
the `livekit-protocol` package that ships with livekit-api, so the real SDK is exercised over a socket.

What it checks, as LiveKit does:
* the `Authorization: Bearer <JWT>` header: HS256 signature with the API secret, issuer = API key, not
  expired (401 `unauthenticated` otherwise);
* the grants each method needs (403 `permission_denied`): CreateRoom and DeleteRoom `roomCreate`,
  ListRooms `roomList`, ListParticipants `roomAdmin` for that very room.

Rooms live in memory; CreateRoom of an existing name returns that room (LiveKit is idempotent there),
DeleteRoom of an unknown room answers 404 `not_found`. `add_participant` puts someone in a room.
Every request is recorded (`requests`: method, decoded request as a dict, content type, claims).
GET requests (a browser's LiveKit client opening its signalling connection) are recorded in
`browser_requests` and refused with 401: there is no media server here.
`webhook_authorization` signs a webhook body the way LiveKit does (a JWT carrying the body's sha256).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from google.protobuf.json_format import MessageToDict, MessageToJson, Parse
from livekit import api as lk
from livekit.protocol import models as lk_models
from livekit.protocol import room as lk_room

from tests.support.loopback_http import LoopbackServer

TWIRP_PREFIX = "/twirp/livekit.RoomService/"


@dataclass
class RecordedRequest:
    method: str
    body: dict[str, Any]
    content_type: str
    claims: dict[str, Any] | None
    status: int


@dataclass
class FakeLiveKit:
    api_key: str = "test-key"
    api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    rooms: dict[str, lk_models.Room] = field(default_factory=dict)
    participants: dict[str, list[lk_models.ParticipantInfo]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    browser_requests: list[str] = field(default_factory=list)  # GET paths (with query) from browsers
    _http: LoopbackServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._http is not None, "start() the fake first"
        return self._http.url

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):]

    def start(self) -> FakeLiveKit:
        self._http = LoopbackServer(self._serve, methods=("GET", "POST"), name="fake-livekit").start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if method == "GET":
            # A browser's LiveKit client: the signalling WebSocket (`/rtc...`) and, when that fails,
            # `/rtc/validate`. No media server here: recorded, then refused as LiveKit refuses a client.
            self.browser_requests.append(handler.path)
            status, payload, content_type = 401, b"fake LiveKit: no signalling server here", "text/plain"
        else:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length)
            status, payload, content_type = self._handle(
                handler.path, handler.headers.get("Content-Type", ""), handler.headers.get("Authorization", ""), body
            )
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        if method == "GET":
            handler.send_header("Access-Control-Allow-Origin", "*")
        handler.end_headers()
        handler.wfile.write(payload)

    # --- test helpers --------------------------------------------------------------------------------

    def calls(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    def add_participant(self, room: str, identity: str, name: str = "") -> None:
        with self._lock:
            self.participants.setdefault(room, []).append(
                lk_models.ParticipantInfo(identity=identity, name=name, sid=f"PA_{secrets.token_hex(6)}")
            )

    def webhook_authorization(self, body: str, *, secret: str | None = None, api_key: str | None = None) -> str:
        """The Authorization header LiveKit puts on a webhook: a JWT (API key/secret) with sha256 of the body."""
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        return (
            lk.AccessToken(api_key or self.api_key, secret or self.api_secret).with_sha256(digest).to_jwt()
        )

    @staticmethod
    def webhook_body(event: str, *, room: str, event_id: str | None = None, **fields: Any) -> str:
        """A webhook event as LiveKit sends it (protobuf JSON)."""
        message = lk.WebhookEvent(
            event=event, id=event_id or f"EV_{secrets.token_hex(8)}", created_at=int(time.time()), **fields
        )
        if event.startswith("egress_"):
            message.egress_info.room_name = room
        else:
            message.room.name = room
            message.room.sid = message.room.sid or "RM_fake"
        return MessageToJson(message)

    # --- the API -------------------------------------------------------------------------------------

    def _error(self, status: int, code: str, msg: str) -> tuple[int, bytes, str]:
        return status, json.dumps({"code": code, "msg": msg}).encode(), "application/json"

    def _claims(self, authorization: str) -> dict[str, Any] | None:
        if not authorization.lower().startswith("bearer "):
            return None
        try:
            return jwt.decode(
                authorization[7:].strip(), self.api_secret, algorithms=["HS256"], issuer=self.api_key,
                options={"require": ["exp", "iss"]},
            )
        except jwt.PyJWTError:
            return None

    def _handle(self, path: str, content_type: str, authorization: str, body: bytes) -> tuple[int, bytes, str]:
        method = path[len(TWIRP_PREFIX):] if path.startswith(TWIRP_PREFIX) else ""
        handlers = {
            "CreateRoom": (lk_room.CreateRoomRequest, self._create_room),
            "DeleteRoom": (lk_room.DeleteRoomRequest, self._delete_room),
            "ListRooms": (lk_room.ListRoomsRequest, self._list_rooms),
            "ListParticipants": (lk_room.ListParticipantsRequest, self._list_participants),
        }
        if method not in handlers:
            return self._error(404, "bad_route", f"no handler for {path}")
        request_class, handler = handlers[method]
        as_json = content_type.split(";")[0].strip() == "application/json"
        try:
            request = Parse(body.decode() or "{}", request_class()) if as_json else request_class.FromString(body)
        except Exception as exc:  # noqa: BLE001 (any decoding failure is a malformed request)
            return self._error(400, "malformed", f"cannot decode {method} request: {exc}")
        claims = self._claims(authorization)
        if claims is None:
            status, payload, ctype = self._error(401, "unauthenticated", "invalid or missing token")
        else:
            with self._lock:
                status, result = handler(request, claims.get("video") or {})
            if status != 200:
                status, payload, ctype = self._error(status, result[0], result[1])
            elif as_json:
                payload, ctype = MessageToJson(result).encode(), "application/json"
            else:
                payload, ctype = result.SerializeToString(), "application/protobuf"
        self.requests.append(
            RecordedRequest(method, MessageToDict(request, preserving_proto_field_name=True), content_type, claims,
                            status)
        )
        return status, payload, ctype

    def _create_room(self, request: lk_room.CreateRoomRequest, video: dict) -> tuple[int, Any]:
        if not video.get("roomCreate"):
            return 403, ("permission_denied", "roomCreate grant required")
        if not request.name:
            return 400, ("invalid_argument", "room name is required")
        room = self.rooms.get(request.name)
        if room is None:
            room = lk_models.Room(
                sid=f"RM_{secrets.token_hex(6)}", name=request.name, empty_timeout=request.empty_timeout,
                max_participants=request.max_participants, metadata=request.metadata,
                creation_time=int(time.time()),
            )
            self.rooms[request.name] = room
        return 200, room

    def _delete_room(self, request: lk_room.DeleteRoomRequest, video: dict) -> tuple[int, Any]:
        if not video.get("roomCreate"):
            return 403, ("permission_denied", "roomCreate grant required")
        if request.room not in self.rooms:
            return 404, ("not_found", "requested room does not exist")
        del self.rooms[request.room]
        self.participants.pop(request.room, None)
        return 200, lk_room.DeleteRoomResponse()

    def _list_rooms(self, request: lk_room.ListRoomsRequest, video: dict) -> tuple[int, Any]:
        if not video.get("roomList"):
            return 403, ("permission_denied", "roomList grant required")
        names = set(request.names)
        rooms = [r for name, r in sorted(self.rooms.items()) if not names or name in names]
        return 200, lk_room.ListRoomsResponse(rooms=rooms)

    def _list_participants(self, request: lk_room.ListParticipantsRequest, video: dict) -> tuple[int, Any]:
        if not video.get("roomAdmin") or video.get("room") != request.room:
            return 403, ("permission_denied", "roomAdmin grant for this room required")
        if request.room not in self.rooms:
            return 404, ("not_found", "requested room does not exist")
        return 200, lk_room.ListParticipantsResponse(participants=self.participants.get(request.room, []))
