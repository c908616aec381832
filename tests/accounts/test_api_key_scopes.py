"""API-key scopes offered are the ones something enforces: `kb:search` and `bots:deploy`. The chat and the bot
directory are public by design, so `chat` and `bots:read` (once offered, guarding nothing) are no longer
offered; keys holding them keep working for their other scopes and the list says those guard nothing."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.accounts.roles import Role
from apps.accounts.services import API_KEY_SCOPES, api_key_create, api_key_hash
from tests.console.conftest import signed_in, user_with_role

pytestmark = pytest.mark.django_db


def _callbacks(patterns):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _callbacks(entry.url_patterns)
        elif isinstance(entry, URLPattern):
            yield entry.callback


def test_every_offered_scope_guards_a_tenant_endpoint():
    enforced = {getattr(callback, "required_scope", None) for callback in
                _callbacks(get_resolver("gbplatform.urls_tenant").url_patterns)} - {None}
    assert enforced == set(API_KEY_SCOPES) == {"kb:search", "bots:deploy"}


def test_the_chat_and_the_bot_directory_need_no_key(canary_tenants):
    client = Client(HTTP_HOST=canary_tenants.a.host)
    assert canary_tenants.a.canary in client.get("/api/bots").content.decode()
    created = client.post("/api/sessions", json.dumps({"bot_name": canary_tenants.a.canary}),
                          content_type="application/json")
    assert created.status_code == 201, created.content


@pytest.mark.parametrize("scope", ["chat", "bots:read"])
def test_the_retired_scopes_are_not_offered(canary_tenants, scope):
    a = canary_tenants.a
    console = signed_in(a, user_with_role(a, "boss", Role.ADMIN))
    page = console.get("/console/api-keys/").content.decode()
    assert 'value="kb:search"' in page and 'value="bots:deploy"' in page and f'value="{scope}"' not in page
    assert "The chat and the bot list (/api/bots) are public: no key is needed or checked for them." in page
    refused = console.post("/console/api-keys/create/", {"name": "ci", "scopes": [scope], "confirmed": "yes"})
    assert refused.status_code == 400 and f"scope &#x27;{scope}&#x27; is not offered" in refused.content.decode()
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("api_key_create", "--tenant", a.schema_name, "--user", "admin", "--name", "ci", "--scope", scope)
    with schema_context(a.schema_name):
        with pytest.raises(ValueError, match="is public"):
            api_key_create(name="x", scopes=[scope], created_by=get_user_model().objects.get(username="admin"))
        assert not ApiKey.objects.exists()


def test_a_key_holding_a_retired_scope_keeps_its_other_scopes(canary_tenants):
    a = canary_tenants.a
    raw = "gbk_0123456789ab_" + "x" * 43
    with schema_context(a.schema_name):
        ApiKey.objects.create(prefix="0123456789ab", secret_hash=api_key_hash(raw), name="old",
                              scopes=["chat", "kb:search"], created_by=get_user_model().objects.get(username="admin"))
    search = Client(HTTP_HOST=a.host).post("/api/kb/search", data=b'{"bot": "nope", "query": "x"}',
                                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert search.status_code == 404  # past the key check: the view answers
    listed = signed_in(a, user_with_role(a, "boss", Role.ADMIN)).get("/console/api-keys/").content.decode()
    assert "<s>chat</s> (public, not checked), kb:search" in listed
    assert "Inactive" not in listed
