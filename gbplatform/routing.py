"""WebSocket routes. The chat consumers (`/ws`, `/ws/<bot>`) join here with the sessions app."""

websocket_urlpatterns: list = []
