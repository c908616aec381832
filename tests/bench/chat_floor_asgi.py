"""The framework floor of the chat bench (tests/bench/bench_chat.py): daphne + Django Channels with nothing of ours.

Two WebSocket routes, served by `python -m daphne tests.bench.chat_floor_asgi:application`:
- `echo`: an AsyncWebsocketConsumer whose receive() sends the text back, i.e. what daphne and Channels cost
  per round trip before any chat code runs;
- `group`: a consumer in a group of its own whose receive() does a `group_send` to that group and whose handler
  sends the text back: one channel-layer round trip per message, as our chat's events travel.

No chat turn served through daphne + Channels can be faster than these, so the bench prints them beside the
chat figures. Self-contained: no project settings, no database; the channel layer is the chat's
(RedisPubSubChannelLayer) on REDIS_URL.
"""

from __future__ import annotations

import os
import uuid

import django
from django.conf import settings

# The same pub/sub layer and limits as gbplatform/settings/base.py (channel_layers_for): a floor measured on
# another layer, or refused at redis-py's default of 100 connections, would not be the chat's floor.
CHANNEL_LAYER_READ_TIMEOUT_S = 30
CHANNEL_LAYER_MAX_CONNECTIONS = 5000

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"],
                                      "socket_timeout": CHANNEL_LAYER_READ_TIMEOUT_S,
                                      "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS}]},
            }
        },
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402 (needs the settings above)
from channels.routing import URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every text frame straight back."""

    async def receive(self, text_data=None, bytes_data=None) -> None:
        await self.send(text_data=text_data)


class GroupEchoConsumer(AsyncWebsocketConsumer):
    """Sends every text frame back through a group_send to its own group (publish, then its subscription)."""

    async def connect(self) -> None:
        # A group per socket: each message travels once through Redis to exactly one consumer, as a chat
        # session's events do.
        self.group = f"floor-{uuid.uuid4().hex}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        await self.channel_layer.group_send(self.group, {"type": "echo.text", "text": text_data})

    async def echo_text(self, event: dict) -> None:
        await self.send(text_data=event["text"])


application = URLRouter([
    path("echo", EchoConsumer.as_asgi()),
    path("group", GroupEchoConsumer.as_asgi()),
])
