"""ASGI entry point (daphne): HTTP through Django, WebSockets through Channels.

WebSocket connections pass the tenant middleware first: the Host picks the tenant (unknown host: the
connection is refused), and consumers do ORM work only through apps.tenants.channels helpers.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gbplatform.settings.dev")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.tenants.channels import TenantWebSocketMiddleware  # noqa: E402
from gbplatform.routing import websocket_urlpatterns  # noqa: E402


def build_application(ws_patterns: list) -> ProtocolTypeRouter:
    """The protocol router; tests build one with their own WebSocket routes through the same middleware."""
    return ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": TenantWebSocketMiddleware(URLRouter(ws_patterns)),
        }
    )


application = build_application(websocket_urlpatterns)
