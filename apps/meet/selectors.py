"""Read-side queries for meetings, in the current tenant's schema."""

from __future__ import annotations

from django.db import connection

from apps.meet.livekit import LiveKitError, livekit_configured, livekit_participants, livekit_room_name
from apps.meet.models import Room

# The room list answers the console's table: the newest rooms are the ones anyone looks for.
ROOM_LIST_LIMIT = 200


def room_detail(room: Room) -> dict:
    return {
        "name": room.name,
        "title": room.title,
        "status": room.status,
        "bot": room.bot.name if room.bot_id else None,
        "max_participants": room.max_participants,
        "livekit_sid": room.livekit_sid,
        "created_at": room.created_at.isoformat(),
        "started_at": room.started_at.isoformat() if room.started_at else None,
        "finished_at": room.finished_at.isoformat() if room.finished_at else None,
        "closed_at": room.closed_at.isoformat() if room.closed_at else None,
        "metadata": room.metadata,
        "path": f"/meet/{room.name}/",
        "recordings": [
            {"egress_id": r.egress_id, "status": r.status, "drive_key": r.drive_key or None,
             "external_location": r.external_location or None, "size_bytes": r.size_bytes}
            for r in room.recordings.all()
        ],
    }


def room_list() -> list[dict]:
    rooms = Room.objects.select_related("bot").prefetch_related("recordings")[:ROOM_LIST_LIMIT]
    return [room_detail(room) for room in rooms]


def room_participants(room: Room) -> list[dict] | None:
    """Who is in the room now, from LiveKit; None when LiveKit is not configured or not reachable."""
    if not livekit_configured():
        return None
    if not room.is_open:
        return []
    try:
        people = livekit_participants(name=livekit_room_name(connection.schema_name, room.name))
    except LiveKitError:
        return None
    return [{"identity": p.identity, "name": p.name} for p in people]
