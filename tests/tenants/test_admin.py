"""Support staff's tenant admin on the public host: usage columns, suspend and resume, per-tenant quotas."""

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from apps.compliance.models import AuditEvent
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_settings_forget

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(settings, canary_tenants):
    with schema_context("public"):
        user = get_user_model().objects.create_superuser("support-staff", password="x-9f2c-long-password")
    client = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    response = client.post("/admin/login/?next=/admin/",
                           {"username": user.username, "password": "x-9f2c-long-password"})
    assert response.status_code == 302, response.content[:500]
    return client


def test_staff_password_guessing_gets_429_and_the_form_still_loads(settings, canary_tenants):
    settings.RATE_LIMIT_API_AUTH, settings.RATE_LIMIT_BURST = 3, 0
    client = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    statuses = [client.post("/admin/login/", {"username": "support-staff", "password": f"guess-{n}"}).status_code
                for n in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert client.get("/admin/login/").status_code == 200


def test_the_tenant_list_shows_usage_counted_in_each_schema(staff_client, canary_tenants):
    page = staff_client.get(f"/admin/tenants/tenant/?q={canary_tenants.a.schema_name}").content.decode()
    assert canary_tenants.a.schema_name in page and "LLM tokens today" in page and "Sessions (7 days)" in page


def test_suspending_a_tenant_closes_its_hosts_and_resuming_reopens_them(staff_client, canary_tenants):
    tenant = Tenant.objects.get(schema_name=canary_tenants.a.schema_name)
    visitor = Client(HTTP_HOST=canary_tenants.a.host)
    assert visitor.get("/").status_code == 200
    from apps.tenants.selectors import tenant_is_ready

    assert tenant_is_ready(tenant.schema_name)  # now cached in this process
    staff_client.post("/admin/tenants/tenant/", {"action": "suspend", "_selected_action": [tenant.pk]})
    assert visitor.get("/").status_code == 503
    assert not tenant_is_ready(tenant.schema_name)  # the process that suspended it forgets at once
    assert Client(HTTP_HOST=canary_tenants.b.host).get("/").status_code == 200  # the other tenant serves on
    staff_client.post("/admin/tenants/tenant/", {"action": "resume", "_selected_action": [tenant.pk]})
    assert visitor.get("/").status_code == 200
    with schema_context(tenant.schema_name):
        actions = list(AuditEvent.objects.filter(action__startswith="tenant.").order_by("id")
                       .values_list("action", "actor"))
    assert actions == [("tenant.suspended", "support:support-staff"), ("tenant.resumed", "support:support-staff")]


def test_a_tenants_own_token_quota_overrides_the_platform_default(canary_tenants, settings):
    from apps.bots.models import Bot
    from apps.llm.services import llm_settings_for

    settings.LLM_TENANT_DAILY_TOKENS = 100_000
    Tenant.objects.filter(schema_name=canary_tenants.a.schema_name).update(llm_daily_tokens=500)
    tenant_settings_forget()
    try:
        with schema_context(canary_tenants.a.schema_name):
            assert llm_settings_for(Bot.objects.get(pk=canary_tenants.a.bot_pk), {}).daily_token_limit == 500
        with schema_context(canary_tenants.b.schema_name):
            assert llm_settings_for(Bot.objects.get(pk=canary_tenants.b.bot_pk), {}).daily_token_limit == 100_000
    finally:
        tenant_settings_forget()


def test_suspend_with_every_tenant_selected_leaves_the_platform_serving(staff_client, canary_tenants, settings):
    # The public tenant was suspended with the others (ready=False committed), then the audit failed (no audit
    # log in public): a 500, and the platform host answered 503 to /admin/ and /api/health until fixed in SQL.
    tenant = Tenant.objects.get(schema_name=canary_tenants.a.schema_name)
    platform = {s: Tenant.objects.get(schema_name=s).ready for s in ("public", settings.TENANT_BASE_SCHEMA)}
    response = staff_client.post("/admin/tenants/tenant/", {
        "action": "suspend", "_selected_action": list(Tenant.objects.values_list("pk", flat=True))}, follow=True)
    assert response.status_code == 200
    assert "The platform tenant and the template cannot be suspended" in response.content.decode()
    assert {s: Tenant.objects.get(schema_name=s).ready for s in platform} == platform == {
        "public": True, settings.TENANT_BASE_SCHEMA: False}
    assert not Tenant.objects.get(pk=tenant.pk).ready  # the others were suspended
    tenant_settings_forget()
    assert Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN).get("/admin/login/").status_code == 200
    staff_client.post("/admin/tenants/tenant/", {"action": "resume", "_selected_action": [tenant.pk]})
    assert Tenant.objects.get(pk=tenant.pk).ready


def test_the_platform_tenants_ready_flag_cannot_be_edited(staff_client, settings):
    for schema in ("public", settings.TENANT_BASE_SCHEMA):
        tenant = Tenant.objects.get(schema_name=schema)
        page = staff_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
        assert 'name="ready"' not in page
    customer = Tenant.objects.exclude(schema_name__in=["public", settings.TENANT_BASE_SCHEMA]).first()
    assert 'name="ready"' in staff_client.get(f"/admin/tenants/tenant/{customer.pk}/change/").content.decode()


def test_suspending_and_settings_changed_in_the_change_form_are_audited(staff_client, canary_tenants):
    """The form's `ready` box suspended a tenant with no tenant.suspended row (only the list's actions wrote one),
    and its quota and encryption changes went unrecorded."""
    tenant = Tenant.objects.get(schema_name=canary_tenants.a.schema_name)
    visitor = Client(HTTP_HOST=canary_tenants.a.host)
    try:
        response = _tenant_form(staff_client, tenant, ready=False, llm_daily_tokens=1234)
        assert response.status_code == 302, response.content[:2000]
        assert visitor.get("/").status_code == 503
        assert (Tenant.objects.get(pk=tenant.pk).ready, Tenant.objects.get(pk=tenant.pk).llm_daily_tokens) == (
            False, 1234)
    finally:
        tenant.refresh_from_db()
        assert _tenant_form(staff_client, tenant, ready=True, llm_daily_tokens="").status_code == 302
    assert visitor.get("/").status_code == 200
    with schema_context(tenant.schema_name):
        events = list(AuditEvent.objects.filter(action__startswith="tenant.").order_by("id")
                      .values_list("action", "actor", "summary"))
    events = [(action, actor, json.loads(summary) if summary else "") for action, actor, summary in events]
    assert events == [("tenant.suspended", "support:support-staff", ""),
                      ("tenant.settings_changed", "support:support-staff", {"llm_daily_tokens": 1234}),
                      ("tenant.resumed", "support:support-staff", ""),
                      ("tenant.settings_changed", "support:support-staff", {"llm_daily_tokens": None})]


def _tenant_form(staff_client, tenant: Tenant, *new_domains: str, **changes):
    """Post the tenant's change form as the page does, its current fields unchanged (but for `changes`: ready,
    llm_daily_tokens), with domains added inline."""
    existing = list(tenant.domains.order_by("pk"))
    data = {"name": tenant.name, "oidc_organization_id": tenant.oidc_organization_id,
            "llm_daily_tokens": changes.get("llm_daily_tokens", tenant.llm_daily_tokens or ""),
            "domains-TOTAL_FORMS": len(existing) + len(new_domains),
            "domains-INITIAL_FORMS": len(existing), "domains-MIN_NUM_FORMS": 0, "domains-MAX_NUM_FORMS": 1000}
    if changes.get("ready", tenant.ready):
        data["ready"] = "on"
    if tenant.encrypt_messages:
        data["encrypt_messages"] = "on"
    for i, domain in enumerate([d.domain for d in existing] + list(new_domains)):
        data[f"domains-{i}-domain"], data[f"domains-{i}-tenant"] = domain, tenant.pk
        if i < len(existing):
            data[f"domains-{i}-id"] = existing[i].pk
            if existing[i].is_primary:
                data[f"domains-{i}-is_primary"] = "on"
    return staff_client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data)


def test_a_domain_added_in_the_admin_is_stored_as_requests_find_it(staff_client, canary_tenants):
    # "Shop.Example.COM." or "shop.example.com:8443" saved as typed and never matched a request (or failed the
    # lower-case constraint with a generic message).
    from apps.tenants.models import Domain
    from apps.tenants.selectors import tenant_for_host

    tenant = Tenant.objects.get(schema_name=canary_tenants.a.schema_name)
    response = _tenant_form(staff_client, tenant, "Shop.Example.COM.", "other-shop.example.com:8443")
    assert response.status_code == 302, re.findall(r"errorlist[^<]*<li>[^<]*", response.content.decode())
    assert set(Domain.objects.filter(tenant=tenant, is_primary=False).values_list("domain", flat=True)) >= {
        "shop.example.com", "other-shop.example.com"}
    assert tenant_for_host("shop.example.com") == tenant == tenant_for_host("other-shop.example.com")
    response = staff_client.post("/admin/tenants/domain/add/", {"domain": "Third.Example.com.", "tenant": tenant.pk})
    assert response.status_code == 302 and tenant_for_host("third.example.com") == tenant


@pytest.mark.parametrize("domain", ["https://shop.example.com", "shop example.com", "shop_x.example.com",
                                    "shop.example.com/path", "-shop.example.com", "shop..example.com"])
def test_a_domain_that_is_no_host_name_is_refused_with_a_reason(staff_client, canary_tenants, domain):
    from apps.tenants.models import Domain

    tenant = Tenant.objects.get(schema_name=canary_tenants.a.schema_name)
    before = set(Domain.objects.values_list("domain", flat=True))
    for response in (_tenant_form(staff_client, tenant, domain),
                     staff_client.post("/admin/tenants/domain/add/", {"domain": domain, "tenant": tenant.pk})):
        assert response.status_code == 200
        assert "is not a host name" in response.content.decode()
    assert set(Domain.objects.values_list("domain", flat=True)) == before


def test_the_platform_host_name_cannot_be_given_to_a_tenant(staff_client, canary_tenants, settings):
    tenant = Tenant.objects.get(schema_name=canary_tenants.a.schema_name)
    response = staff_client.post("/admin/tenants/domain/add/", {
        "domain": settings.PLATFORM_PUBLIC_DOMAIN.upper() + ".", "tenant": tenant.pk})
    assert response.status_code == 200 and "is the platform&#x27;s own host name" in response.content.decode()
