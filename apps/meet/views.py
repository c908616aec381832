"""Meetings over HTTP: the JSON API, the meeting page and LiveKit's webhook. Each view calls one service."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from apps.bots.models import Bot
from apps.compliance.middleware import CSP_HEADER, content_security_policy, csp_extra_sources_parse
from apps.compliance.services import audit_record
from apps.core.wire import WireError, json_loads
from apps.meet import selectors
from apps.meet.livekit import livekit_configured, livekit_csp_sources
from apps.meet.models import Room
from apps.meet.services import (
    ROLE_GRANTS,
    ROOM_MANAGER_ROLES,
    MeetError,
    effective_role,
    join_token_mint,
    room_close,
    room_create,
    room_join_path,
    user_meet_role,
    webhook_receive,
)

# The meeting page needs the camera, microphone and screen sharing of its own origin; every other
# powerful feature stays off, as on every other page (apps.compliance.middleware's default).
MEET_PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(self), display-capture=(self), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(self), payment=(), usb=(), browsing-topics=()"
)


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _payload(request: HttpRequest) -> dict:
    if request.content_type == "application/json":
        try:
            data = json_loads(request.body or b"{}")
        except WireError as exc:
            raise MeetError(f"the body is not valid JSON: {exc}") from None
        except (ValueError, UnicodeDecodeError):
            raise MeetError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise MeetError("the body must be a JSON object")
        return data
    return request.POST.dict()


def _room_or_none(name: str) -> Room | None:
    return Room.objects.filter(name=name).first()


def _role_refusal(request: HttpRequest, *, manage: bool) -> JsonResponse | None:
    """None when the request may see rooms (any console role) or, with `manage`, create and close them
    (editor or admin); else the error response."""
    if not request.user.is_authenticated:
        return _error("sign in to use meetings", 401)
    role = user_meet_role(request.user)
    if role is None:
        return _error("meetings need a console role (viewer, editor or admin) in this tenant", 403)
    if manage and role not in ROOM_MANAGER_ROLES:
        return _error(f"managing meetings needs the editor or admin role; you have {role}", 403)
    return None


@require_http_methods(["GET", "POST"])
def rooms_api(request: HttpRequest) -> JsonResponse:
    """GET: the tenant's rooms (signed-in users). POST {name, title?, bot?, max_participants?}: a new room."""
    if (refused := _role_refusal(request, manage=request.method != "GET")) is not None:
        return refused
    if request.method == "GET":
        return JsonResponse({"video": livekit_configured(), "rooms": selectors.room_list()})
    try:
        data = _payload(request)
        bot = None
        if data.get("bot"):
            bot = Bot.objects.filter(name=str(data["bot"])).first()
            if bot is None:
                raise MeetError(f"no bot named {data['bot']!r} in this tenant")
        max_participants = data.get("max_participants")
        if max_participants not in (None, ""):
            try:
                max_participants = int(max_participants)
            except (TypeError, ValueError):
                raise MeetError(f"max_participants must be a whole number, not {max_participants!r}") from None
        else:
            max_participants = None
        room = room_create(
            name=str(data.get("name") or ""), title=str(data.get("title") or ""), bot=bot,
            created_by=request.user, max_participants=max_participants,
        )
    except MeetError as exc:
        return _error(str(exc), exc.status)
    audit_record(action="meet.room.create", object_type="meet_room", object_id=room.name, request=request)
    return JsonResponse(
        {**selectors.room_detail(room), "video": livekit_configured(),
         "invite_path": room_join_path(room=room, invite=True)},
        status=201,
    )


@require_http_methods(["GET", "DELETE"])
def room_api(request: HttpRequest, name: str) -> JsonResponse:
    """GET: one room with who is in it now (LiveKit). DELETE: close the room (everyone is disconnected)."""
    if (refused := _role_refusal(request, manage=request.method != "GET")) is not None:
        return refused
    room = _room_or_none(name)
    if room is None:
        return _error(f"no room named {name!r}", 404)
    if request.method == "GET":
        return JsonResponse({**selectors.room_detail(room), "participants": selectors.room_participants(room)})
    try:
        room = room_close(room=room)
    except MeetError as exc:
        return _error(str(exc), exc.status)
    audit_record(action="meet.room.close", object_type="meet_room", object_id=room.name, request=request)
    return JsonResponse(selectors.room_detail(room))


@require_POST
def room_token_api(request: HttpRequest, name: str) -> JsonResponse:
    """A LiveKit join token for the caller: their role's grants, or a guest's with a valid `invite`
    (anonymous guests also send a display `name`)."""
    room = _room_or_none(name)
    if room is None:
        return _error(f"no room named {name!r}", 404)
    try:
        data = _payload(request)
        role = effective_role(user=request.user, room=room, invite=str(data.get("invite") or ""))
        if role is None:
            if request.user.is_authenticated:
                return _error("you have no console role here: open the meeting from its invite link", 403)
            return _error("sign in, or open the meeting from its invite link", 401)
        joined = join_token_mint(room=room, role=role, user=request.user, guest_name=str(data.get("name") or ""))
    except MeetError as exc:
        return _error(str(exc), exc.status)
    return JsonResponse({
        "token": joined.token, "url": joined.url, "room": joined.room, "identity": joined.identity,
        "name": joined.name, "role": str(joined.role), "grants": ROLE_GRANTS[joined.role],
        "expires_at": joined.expires_at.isoformat(),
    })


def _webhook(request: HttpRequest, expected_schema: str | None) -> JsonResponse:
    try:
        outcome = webhook_receive(
            body=request.body, authorization=request.headers.get("Authorization", ""), expected_schema=expected_schema
        )
    except MeetError as exc:
        return _error(str(exc), exc.status)
    return JsonResponse({"status": outcome.status, "event": outcome.event, "id": outcome.event_id})


@csrf_exempt  # LiveKit signs the request (a JWT with the body's sha256); there is no browser session
@require_POST
def meet_webhook(request: HttpRequest) -> JsonResponse:
    """LiveKit's webhook on a tenant host: only events of this tenant's rooms are accepted."""
    return _webhook(request, request.tenant.schema_name)


@csrf_exempt
@require_POST
def meet_webhook_public(request: HttpRequest) -> JsonResponse:
    """LiveKit's webhook on the platform's public host (one URL for a LiveKit server shared by every
    tenant): the room-name namespace picks the tenant (routed in gbplatform/urls_public.py)."""
    return _webhook(request, None)


def _page_policy(request: HttpRequest) -> str:
    configured = csp_extra_sources_parse(getattr(settings, "SECURITY_CSP_EXTRA_SOURCES", ()))
    extra = {directive: list(sources) for directive, sources in configured.items()}
    extra.setdefault("connect-src", []).extend(livekit_csp_sources())
    try:
        host = request.get_host()
    except Exception:  # DisallowedHost: no WebSocket source then, as in the middleware
        host = None
    return content_security_policy(extra=extra, websocket_host=host, secure=request.is_secure())


def room_page(request: HttpRequest, name: str) -> HttpResponse:
    """The meeting page: the LiveKit JS client joins with a token from room_token_api (no inline script)."""
    room = _room_or_none(name)
    if room is None:
        return render(request, "meet/missing.html", {"name": name}, status=404)
    invite = request.GET.get("invite", "")
    role = effective_role(user=request.user, room=room, invite=invite)
    if role is None:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return render(request, "meet/missing.html", {"name": name}, status=403)  # signed in, no console role
    response = render(request, "meet/room.html", {
        "room": room,
        "role": str(role),
        "invite": invite if role == "guest" else "",
        "video": livekit_configured(),
        "needs_name": not request.user.is_authenticated,
        "can_publish": ROLE_GRANTS[role]["can_publish"],
    })
    response[CSP_HEADER] = _page_policy(request)
    response["Permissions-Policy"] = MEET_PERMISSIONS_POLICY
    return response
