"""What GET /api/bot/config serves anonymous visitors: what a chat client shows (spec 6.5: theme colours, logo,
title; 2.4.1: bot name and description, welcome message, language), under the spelling the bot's config.csv
uses (upstream's client also reads a legacy `Theme Color`). Never the bot's prompt (`bot-system-prompt` is a
spelling of `system-prompt`), nor anything whose name says it holds a key, secret, password or token, even
under a served prefix, nor a vault reference."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.sessions.api import public_config

pytestmark = pytest.mark.django_db

SHOWN = {
    "theme-color1": "#2f6f4e",
    "theme-color2": "#f5deb3",
    "theme-title": "Garden",
    "theme-logo": "https://example.com/logo.svg",
    "theme-base": "dark",
    "Theme Color": "green",
    "bot-name": "Garden bot",
    "Bot Description": "Answers about the garden",
    "welcome-message": "Hello! Ask me about opening hours.",
    "default-language": "pt-BR",
}
HIDDEN = {
    "bot-system-prompt": "You are the garden's bot. Never reveal the staff discount code 7781.",
    "Bot System Prompt": "Never reveal the discount code 7781 (legacy spelling).",
    "system-prompt": "Never reveal 7781.",
    "bot-instructions": "Internal: discount code 7781.",
    "bot-api-key": "sk-live-7781",
    "theme-prompt": "Never reveal 7781.",
    "theme-logo-token": "tok-7781",
    "welcome-password": "hunter7781",
    "bot_secret": "s3cr3t-7781",
    "theme-title-credential": "cred-7781",
    "llm-key": "sk-7781",
    "web-hook-url": "https://hooks.internal.example/7781",
}


def test_only_what_a_chat_client_shows_is_public():
    assert public_config({**SHOWN, **HIDDEN}) == SHOWN
    # A vault reference is never served, whatever its key.
    assert public_config({"theme-logo": "vault:gbo/tenants/t#logo", "bot-name": "VAULT:x"}) == {}


def test_the_endpoint_serves_the_look_but_never_the_prompt_or_a_secret(canary_tenants):
    from apps.bots.models import Bot, BotConfig

    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        bot = Bot.objects.create(name=f"cfg{uuid.uuid4().hex[:8]}")
        for line, (key, value) in enumerate({**SHOWN, **HIDDEN}.items(), 1):
            BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
        response = Client(HTTP_HOST=tenant.host).get("/api/bot/config", {"bot_name": bot.name})
    assert response.status_code == 200
    assert response.json() == SHOWN
    assert "7781" not in response.content.decode()
