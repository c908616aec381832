"""URLs of the chat on tenant hosts: the REST API, then the web chat pages (`/<bot>/`, included last in
gbplatform.urls_tenant so a bot name never shadows another route)."""

from django.urls import path

from apps.sessions import api, views_web

urlpatterns = [
    path("api/auth", api.auth_bootstrap, name="chat-auth"),
    path("api/bot/config", api.bot_config, name="chat-bot-config"),
    path("api/openapi.json", api.openapi, name="chat-openapi"),
    path("api/sessions", api.sessions_create, name="chat-sessions"),
    path("api/sessions/<uuid:session_id>/messages", api.session_messages, name="chat-messages"),
    path("api/sessions/<uuid:session_id>/history", api.session_history, name="chat-history"),
    path("api/sessions/<uuid:session_id>/stream", api.session_stream, name="chat-stream"),
    path("<slug:bot>/", views_web.chat_page, name="chat-page"),
    path("<slug:bot>/embed", views_web.chat_embed, name="chat-embed"),
]
