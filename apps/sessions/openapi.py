"""The OpenAPI 3.1 description of the chat API (served at /api/openapi.json)."""

from __future__ import annotations

_MESSAGE = {
    "type": "object",
    "properties": {
        "index": {"type": "integer", "description": "0-based position in the session"},
        "role": {"type": "integer", "description": "1 user, 2 assistant"},
        "message_type": {"type": "integer", "description": "upstream message type (1 user, 2 bot, 6 tool)"},
        "content": {"type": "string"},
        "meta": {"type": "object", "description": "citations, tool_calls, cached, offline..."},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "required": ["index", "role", "message_type", "content"],
}
_SUGGESTION = {"type": "object", "properties": {"kind": {"enum": ["text", "context", "tool"]},
                                                "value": {"type": "string"}, "label": {"type": "string"}}}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_SEND = {"type": "object", "properties": {
    "content": {"type": "string", "description": (
        "the user's text, or with message_type 6 the name of a tool the session offers (its tools and tool "
        "suggestions); another name is answered \"Sorry, '<name>' is not available.\"")},
    "message_type": {"type": "integer", "default": 1, "enum": [1, 4, 6, 7, 8], "description": (
        "1 user text, 4 a suggestion's text, 6 a tool button, 7 system (ignored), 8 format switcher toggle "
        "(the last question answered again); another value, or content that is not a string, is a 400")},
    "client_message_id": {"type": "string", "maxLength": 200, "description": (
        "the client's id of this message, as the Idempotency-Key header (which wins when both are sent)")}},
    "required": ["content"]}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x21-\\x7e]+$"},
    "description": ("The client's id of this message (e.g. a UUID), so a request retried after a timeout is not "
                    "taken twice: a message of the session already sent with this id runs no new turn (no new "
                    "user message, no model call, no tool run); the answer is that turn's messages. Checked "
                    "under the session's lock, so a retry sent while the first request still runs waits for it. "
                    "Not kept for a format switcher toggle (8) or a system message (7), which add no message.")}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "bad input", 404: "unknown bot or session", 429: "rate limited (Retry-After header)",
            503: "busy (the tenant's running turns fill its share of the server, or the rate-limit store is "
                 "down): the message was not taken; send it again after Retry-After seconds"}
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, text[c]) for c in codes}


def openapi_schema(server_url: str) -> dict:
    replies = {"type": "object", "properties": {
        "session_id": {"type": "string", "format": "uuid"},
        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
        "suggestions": {"type": "array", "items": {"$ref": "#/components/schemas/Suggestion"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Chat API", "version": "1",
                 "description": "Sessions and messages of this tenant's bots. The WebSocket protocol "
                                "(/ws?session_id=&user_id=&bot_name=) is General Bots' (JSON frames)."},
        "servers": [{"url": server_url}],
        "paths": {
            "/api/auth": {"get": {
                "summary": "Anonymous session bootstrap (General Bots compatible)",
                "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                               for n in ("bot_name", "user_id", "session_id")],
                "responses": {"200": _json({"type": "object"}, "ids of the user and session"), **_errors(404)}}},
            "/api/bot/config": {"get": {
                "summary": "The bot's public configuration (theme, name, welcome text; no prompt or credentials)",
                "parameters": [{"name": "bot_name", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "config key -> value"), **_errors(404)}}},
            "/api/sessions": {"post": {
                "summary": "Create a session; the bot's start script runs",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "bot_name": {"type": "string"}, "user_id": {"type": "string"}}, "required": ["bot_name"]}}}},
                "responses": {"201": _json(replies, "the session and the start script's messages"),
                              **_errors(400, 404, 429, 503)}}},
            "/api/sessions/{session_id}/messages": {
                "post": {"summary": "Send a message; answers with the bot's replies",
                         "parameters": [_SESSION_ID, _IDEMPOTENCY_KEY],
                         "requestBody": {"content": {"application/json": {"schema": _SEND}}},
                         "responses": {"200": _json(replies, "the bot's messages of this turn"),
                                       **_errors(400, 404, 429, 503)}},
                "get": {"summary": "History", "parameters": [
                    _SESSION_ID, {"name": "after", "in": "query", "schema": {"type": "integer", "default": -1}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 200}}],
                    "responses": {"200": _json({"type": "object"}, "messages after the index"), **_errors(404)}}},
            "/api/sessions/{session_id}/history": {"get": {
                "summary": "History (same as GET .../messages)", "parameters": [_SESSION_ID],
                "responses": {"200": _json({"type": "object"}, "messages"), **_errors(404)}}},
            "/api/sessions/{session_id}/stream": {"post": {
                "summary": "Send a message; the turn as server-sent events",
                "parameters": [_SESSION_ID, _IDEMPOTENCY_KEY],
                "requestBody": {"content": {"application/json": {"schema": _SEND}}},
                "responses": {"200": {"description": "events: thinking, message, stream_start, delta, "
                                                     "suggestions, status, then done; a message with "
                                                     "update: true replaces the one of its index",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_errors(400, 404, 429)}}},
        },
        "components": {"schemas": {"Message": _MESSAGE, "Suggestion": _SUGGESTION, "Error": _ERROR}},
    }
