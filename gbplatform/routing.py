"""WebSocket routes: the chat (upstream protocol at /ws and /ws/<bot>, the HTMX chat at /ws/<bot>/ui)."""

from django.urls import path

from apps.sessions.consumers import HtmxChatConsumer, UpstreamChatConsumer

websocket_urlpatterns: list = [
    path("ws", UpstreamChatConsumer.as_asgi()),
    path("ws/<slug:bot>/ui", HtmxChatConsumer.as_asgi()),
    path("ws/<slug:bot>", UpstreamChatConsumer.as_asgi()),
]
