"""ASGI entry point (daphne): HTTP through Django, WebSockets through Channels.

Importing it also makes daphne refuse a request body over the limit while it arrives
(apps.core.daphne_body_limit) and drop clients whose request head or body trickles in too slowly
(apps.core.daphne_slow_clients): daphne loads this module before it serves. RequestBodyLimit keeps the same
body limit in the ASGI chain.

WebSocket connections pass the tenant middleware first: the Host picks the tenant (unknown host: the
connection is refused), and consumers do ORM work only through apps.tenants.channels helpers.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gbplatform.settings.dev")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.core import daphne_body_limit, daphne_slow_clients  # noqa: E402
from apps.core.asgi_limits import RequestBodyLimit  # noqa: E402
from apps.tenants.channels import TenantWebSocketMiddleware  # noqa: E402
from gbplatform.routing import websocket_urlpatterns  # noqa: E402

daphne_body_limit.install()
daphne_slow_clients.install()


def build_application(ws_patterns: list) -> ProtocolTypeRouter:
    """The protocol router; tests build one with their own WebSocket routes through the same middleware."""
    return ProtocolTypeRouter(
        {
            "http": RequestBodyLimit(django_asgi_app),
            "websocket": TenantWebSocketMiddleware(URLRouter(ws_patterns)),
        }
    )


application = build_application(websocket_urlpatterns)


def _preload() -> None:
    """Import the LLM layer (the openai and anthropic SDKs) and load the offline embedding model, running it
    once, beside serving (settings.WEB_PRELOAD)."""
    import importlib
    import logging

    try:
        importlib.import_module("apps.llm.services")
        from apps.kb.embeddings import LocalMiniLM

        LocalMiniLM().embed(["warm up"])
    except Exception:  # noqa: BLE001 - the first question that needs it tries again and reports its error
        logging.getLogger(__name__).warning("preloading the offline embedding model failed", exc_info=True)


def _startup_checks() -> None:
    from apps.sessions.checks import connection_budget_log

    connection_budget_log()


def preload_start() -> None:
    import threading

    from django.conf import settings

    threading.Thread(target=_startup_checks, name="web-startup-checks", daemon=True).start()
    if getattr(settings, "WEB_PRELOAD", False):
        threading.Thread(target=_preload, name="web-preload", daemon=True).start()


preload_start()
