"""An API key acts with at most its creator's current authority: demoting, deactivating or deleting the admin
who made a `bots:deploy` key stops the key deploying at once (whichever way the role changed), deleting the
creator revokes the key so the list says why, refusals are audited, and the check costs no extra query."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey, ConsoleProfile
from apps.accounts.roles import Role
from apps.accounts.services import ApiKeyRejected, api_key_authenticate, api_key_create, oidc_user_sign_in
from apps.compliance.models import AuditEvent
from tests.console.conftest import signed_in, user_with_role

pytestmark = pytest.mark.django_db
ISSUER = "https://id.acme.test"


@pytest.fixture(autouse=True)
def _test_urls(settings):
    # /test/editor is api_access(role=EDITOR, scope="bots:deploy"), as POST /api/bots/deploy is.
    settings.ROOT_URLCONF = "tests.accounts.urls"


def _deploy(tenant, secret: str):
    return Client(HTTP_HOST=tenant.host).get("/test/editor", HTTP_AUTHORIZATION=f"Bearer {secret}")


def _search(tenant, secret: str):
    return Client(HTTP_HOST=tenant.host).post("/api/kb/search", data=b'{"bot": "nope", "query": "x"}',
                                              content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}")


def _key_of(tenant, user, scopes=("bots:deploy",)) -> str:
    with schema_context(tenant.schema_name):
        return api_key_create(name="deploy script", scopes=list(scopes), created_by=user).secret


def _denials(tenant) -> list[tuple[str, str]]:
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(action="apikey.denied").order_by("id").values_list("actor", "summary"))


def test_an_admin_demoted_by_another_admin_takes_the_keys_deploy_right_with_him(canary_tenants):
    a = canary_tenants.a
    alice = user_with_role(a, "alice", Role.ADMIN)
    secret = _key_of(a, alice, scopes=("bots:deploy", "kb:search"))
    assert _deploy(a, secret).status_code == 200

    boss = signed_in(a, user_with_role(a, "boss", Role.ADMIN))
    assert boss.post(f"/console/users/{alice.pk}/role/", {"role": "viewer", "confirmed": "yes"}).status_code == 302

    refused = _deploy(a, secret)
    assert refused.status_code == 403
    assert refused.json() == {"error": "this API key's creator no longer holds the editor role this needs "
                                       "(a key acts with its creator's current role)"}
    assert _search(a, secret).status_code == 404  # kb:search needs a viewer: past authentication, the view answers
    [(actor, summary)] = _denials(a)
    assert actor == f"api-key:{secret.split('_')[1]}"
    assert '"creator": "alice"' in summary and '"held": "viewer"' in summary and '"required": "editor"' in summary

    # Given the role back, the key works again: nothing was changed on the key, only its creator's role read.
    assert boss.post(f"/console/users/{alice.pk}/role/", {"role": "editor", "confirmed": "yes"}).status_code == 302
    assert _deploy(a, secret).status_code == 200


def test_a_key_stops_when_its_oidc_creator_is_mapped_to_a_lower_role_or_none(canary_tenants):
    a = canary_tenants.a
    claims = {"sub": "sub-olga"}
    with schema_context(a.schema_name):
        olga = oidc_user_sign_in(issuer=ISSUER, claims=claims, email="olga@acme.test", role=Role.ADMIN)
    secret = _key_of(a, olga)
    assert _deploy(a, secret).status_code == 200
    with schema_context(a.schema_name):
        oidc_user_sign_in(issuer=ISSUER, claims=claims, email="olga@acme.test", role=Role.VIEWER)
    assert _deploy(a, secret).status_code == 403
    with schema_context(a.schema_name):  # signing in with no mapped role (removed at the provider) clears it
        assert oidc_user_sign_in(issuer=ISSUER, claims=claims, email="olga@acme.test", role=None) is None
    refused = _deploy(a, secret)
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert refused.json() == {"error": "this API key's creator no longer has console access"}


def test_a_deactivated_creator_stops_the_key(canary_tenants):
    a = canary_tenants.a
    alice = user_with_role(a, "alice", Role.ADMIN)
    secret = _key_of(a, alice)
    with schema_context(a.schema_name):
        get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    refused = _deploy(a, secret)
    assert refused.status_code == 401 and refused.json() == {"error": "this API key's creator is deactivated"}
    assert '"problem": "creator_inactive"' in _denials(a)[0][1]


def test_deleting_the_creator_revokes_the_key_and_says_why(canary_tenants):
    a = canary_tenants.a
    alice = user_with_role(a, "alice", Role.ADMIN)
    secret = _key_of(a, alice)
    prefix = secret.split("_")[1]
    assert _deploy(a, secret).status_code == 200
    with schema_context(a.schema_name):
        get_user_model().objects.get(pk=alice.pk).delete()
        key = ApiKey.objects.get(prefix=prefix)
        revoked = AuditEvent.objects.get(action="apikey.revoked", object_id=prefix)
    assert key.created_by_id is None and key.revoked_at is not None and key.revoked_reason == "creator_deleted"
    assert '"reason": "creator deleted"' in revoked.summary and '"creator": "alice"' in revoked.summary
    refused = _deploy(a, secret)
    assert refused.status_code == 401 and refused.json() == {"error": "this API key has been revoked"}

    listed = signed_in(a, user_with_role(a, "boss", Role.ADMIN)).get("/console/api-keys/?revoked=1").content.decode()
    assert "revoked: its creator was deleted" in listed


def test_a_key_without_a_creator_works_nowhere(canary_tenants):
    """Rows left by the old SET_NULL (a creator deleted before keys were revoked with it) or by the old command."""
    a = canary_tenants.a
    secret = _key_of(a, user_with_role(a, "alice", Role.ADMIN))
    with schema_context(a.schema_name):
        ApiKey.objects.update(created_by=None)
    refused = _deploy(a, secret)
    assert refused.status_code == 401
    assert refused.json()["error"].startswith("this API key has no owner")  # adoptable: test_api_key_adopt.py


def test_the_key_list_shows_keys_inactive_because_of_their_creator(canary_tenants):
    a = canary_tenants.a
    vic = user_with_role(a, "vic", Role.ADMIN)
    dora = user_with_role(a, "dora", Role.ADMIN)
    _key_of(a, vic, scopes=("bots:deploy", "kb:search"))
    _key_of(a, dora)
    with schema_context(a.schema_name):
        ConsoleProfile.objects.filter(user=vic).update(role=Role.VIEWER.value)
        get_user_model().objects.filter(pk=dora.pk).update(is_active=False)
    html = signed_in(a, user_with_role(a, "boss", Role.ADMIN)).get("/console/api-keys/").content.decode()
    assert "Partly inactive: its creator vic is viewer now; refused: bots:deploy (editor)." in html
    assert "Inactive: its creator dora is deactivated." in html


def test_a_key_needs_a_creator_holding_its_scopes_roles(canary_tenants, capsys):
    a = canary_tenants.a
    vera = user_with_role(a, "vera", Role.VIEWER)
    with schema_context(a.schema_name):
        with pytest.raises(ValueError, match="acts for the user who creates it"):
            api_key_create(name="x", scopes=["kb:search"], created_by=None)
        with pytest.raises(ValueError, match=r"vera holds the viewer role, which does not grant bots:deploy \(needs "
                                             r"editor\)"):
            api_key_create(name="x", scopes=["bots:deploy"], created_by=vera)
        assert not ApiKey.objects.exists()
    with pytest.raises(CommandError, match="does not grant bots:deploy"):
        call_command("api_key_create", "--tenant", a.schema_name, "--user", "vera", "--name", "ci",
                     "--scope", "bots:deploy")
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("api_key_create", "--tenant", a.schema_name, "--user", "nobody", "--name", "ci",
                     "--scope", "kb:search")
    call_command("api_key_create", "--tenant", a.schema_name, "--user", "admin", "--name", "ci",
                 "--scope", "bots:deploy")
    secret = capsys.readouterr().out.strip()
    assert _deploy(a, secret).status_code == 200
    with schema_context(a.schema_name):
        assert ApiKey.objects.get().created_by.username == "admin"


def test_the_creator_is_read_in_the_same_query_as_the_key(canary_tenants, django_assert_num_queries):
    a = canary_tenants.a
    with_profile = _key_of(a, user_with_role(a, "alice", Role.EDITOR))
    with schema_context(a.schema_name):
        admin = get_user_model().objects.get(username="admin")  # a superuser: an admin without a console profile
        without_profile = api_key_create(name="ops", scopes=["bots:deploy"], created_by=admin).secret
        for secret in (with_profile, without_profile):
            api_key_authenticate(secret, role=Role.EDITOR)  # writes last_used_at, at most once a minute
            with django_assert_num_queries(1):
                api_key_authenticate(secret, role=Role.EDITOR)
        with django_assert_num_queries(1), pytest.raises(ApiKeyRejected, match="no longer holds the admin role"):
            api_key_authenticate(with_profile, role=Role.ADMIN)
