"""Ownerless API keys (made by the `api_key_create` command before keys belonged to a user: created_by NULL,
never revoked) are refused with a message of their own, and `api_key_adopt` gives them an owner who holds their
scopes' roles, so a deployment's CI keys survive the upgrade; a deleted creator's key stays dead."""

from __future__ import annotations

import secrets

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.accounts.roles import Role
from apps.accounts.services import api_key_create, api_key_hash
from apps.compliance.models import AuditEvent
from tests.console.conftest import signed_in, user_with_role

pytestmark = pytest.mark.django_db
OWNERLESS = ("this API key has no owner (it was made before keys belonged to a user); a tenant admin can adopt it "
             "with `manage.py api_key_adopt` or create a new key")


@pytest.fixture(autouse=True)
def _test_urls(settings):
    # /test/editor is api_access(role=EDITOR, scope="bots:deploy"), as POST /api/bots/deploy is.
    settings.ROOT_URLCONF = "tests.accounts.urls"


def _deploy(tenant, secret: str):
    return Client(HTTP_HOST=tenant.host).get("/test/editor", HTTP_AUTHORIZATION=f"Bearer {secret}")


def _legacy_key(tenant, scopes=("bots:deploy",)) -> tuple[str, str]:
    """A key row as the command wrote it before keys had an owner (created_by=None); (prefix, secret)."""
    prefix = secrets.token_hex(6)
    secret = f"gbk_{prefix}_{secrets.token_urlsafe(32)}"
    with schema_context(tenant.schema_name):
        ApiKey.objects.create(prefix=prefix, secret_hash=api_key_hash(secret), name="ci deploy",
                              scopes=list(scopes), created_by=None)
    return prefix, secret


def _adopt(tenant, prefix: str, username: str) -> None:
    call_command("api_key_adopt", "--tenant", tenant.schema_name, "--prefix", prefix, "--user", username)


def _owner(tenant, prefix: str) -> str | None:
    with schema_context(tenant.schema_name):
        key = ApiKey.objects.select_related("created_by").get(prefix=prefix)
    return key.created_by.username if key.created_by else None


def test_an_ownerless_key_is_refused_saying_it_has_no_owner(canary_tenants):
    a = canary_tenants.a
    prefix, secret = _legacy_key(a)
    refused = _deploy(a, secret)
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert refused.json() == {"error": OWNERLESS}
    with schema_context(a.schema_name):
        denied = AuditEvent.objects.get(action="apikey.denied")
    assert '"problem": "creator_none"' in denied.summary
    html = signed_in(a, user_with_role(a, "boss", Role.ADMIN)).get("/console/api-keys/").content.decode()
    assert "Inactive: it has no owner" in html and "api_key_adopt" in html


def test_adopting_an_ownerless_key_to_an_admin_makes_it_work_and_is_audited(canary_tenants, capsys):
    a = canary_tenants.a
    prefix, secret = _legacy_key(a, scopes=("bots:deploy", "kb:search"))
    _adopt(a, prefix, "admin")
    assert f"API key {prefix} of {a.schema_name} now acts for admin" in capsys.readouterr().out
    assert _owner(a, prefix) == "admin"
    assert _deploy(a, secret).status_code == 200  # same secret: the script needs no change
    with schema_context(a.schema_name):
        adopted = AuditEvent.objects.get(action="apikey.adopted")
    assert adopted.actor == "admin" and adopted.object_type == "api_key" and adopted.object_id == prefix
    assert '"creator": "admin"' in adopted.summary and "bots:deploy" in adopted.summary

    # Adopted, it is an ordinary key: it cannot be re-homed.
    user_with_role(a, "alice", Role.ADMIN)
    with pytest.raises(CommandError, match=f"API key {prefix} already belongs to admin"):
        _adopt(a, prefix, "alice")
    assert _owner(a, prefix) == "admin"


def test_a_viewer_cannot_adopt_a_deploy_key(canary_tenants):
    a = canary_tenants.a
    user_with_role(a, "vera", Role.VIEWER)
    prefix, secret = _legacy_key(a)
    with pytest.raises(CommandError, match=r"vera holds the viewer role, which does not grant bots:deploy "
                                           r"\(needs editor\)"):
        _adopt(a, prefix, "vera")
    assert _owner(a, prefix) is None
    assert _deploy(a, secret).json() == {"error": OWNERLESS}
    with schema_context(a.schema_name):
        get_user_model().objects.filter(username="vera").update(is_active=False)
        assert not AuditEvent.objects.filter(action="apikey.adopted").exists()
    with pytest.raises(CommandError, match="vera is deactivated and cannot adopt API keys"):
        _adopt(a, prefix, "vera")
    with pytest.raises(CommandError, match="no user 'nobody'"):
        _adopt(a, prefix, "nobody")
    with pytest.raises(CommandError, match="no API key 'ffffffffffff'"):
        _adopt(a, "ffffffffffff", "admin")
    with pytest.raises(CommandError, match="no ready tenant with schema 'nope'"):
        call_command("api_key_adopt", "--tenant", "nope", "--prefix", prefix, "--user", "admin")


def test_a_key_whose_creator_was_deleted_or_that_was_revoked_cannot_be_adopted(canary_tenants):
    a = canary_tenants.a
    alice = user_with_role(a, "alice", Role.ADMIN)
    with schema_context(a.schema_name):
        created = api_key_create(name="deploy", scopes=["bots:deploy"], created_by=alice)
        get_user_model().objects.get(pk=alice.pk).delete()
    deleted_prefix = created.key.prefix
    with pytest.raises(CommandError, match=f"API key {deleted_prefix} was revoked when its creator was deleted"):
        _adopt(a, deleted_prefix, "admin")
    assert _owner(a, deleted_prefix) is None
    assert _deploy(a, created.secret).json() == {"error": "this API key has been revoked"}

    prefix, secret = _legacy_key(a)
    with schema_context(a.schema_name):
        ApiKey.objects.filter(prefix=prefix).update(revoked_at=created.key.created_at)
    with pytest.raises(CommandError, match=f"API key {prefix} is revoked; create a new key"):
        _adopt(a, prefix, "admin")
    with schema_context(a.schema_name):
        assert not AuditEvent.objects.filter(action="apikey.adopted").exists()


def test_a_live_key_with_a_deleted_creators_reason_keeps_the_creator_deleted_message(canary_tenants):
    """`revoked_reason` set without a creator is not ownerless: the message stays "create a new key"."""
    a = canary_tenants.a
    prefix, secret = _legacy_key(a)
    with schema_context(a.schema_name):
        ApiKey.objects.filter(prefix=prefix).update(revoked_reason=ApiKey.REVOKED_CREATOR_DELETED)
    assert _deploy(a, secret).json() == {"error": "this API key's creator no longer exists; create a new key"}
