"""Support staff's view of tenants on the public host's Django admin: usage, health, quotas, suspension.

Usage columns are counted inside each listed tenant's schema (a page of tenants, a few indexed counts
each). Suspending a tenant marks it not ready: its hosts answer 503 and its jobs stop; resuming undoes it.
Both are recorded in the tenant's own audit log.
"""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from apps.tenants.models import Domain, Tenant
from apps.tenants.selectors import hostname_normalize, tenant_settings_forget
from apps.tenants.services import HOSTNAME_RE, platform_schema_names, tenant_ready_set


class DomainForm(forms.ModelForm):
    """A host name as requests find it: typed `Shop.Example.COM.` or `shop.example.com:8443`, it is stored
    `shop.example.com` (hostname_normalize, as every lookup reads a Host header); anything that is not a host
    name is refused with the reason, not saved to match nothing."""

    class Meta:
        model = Domain
        fields = ("domain", "tenant", "is_primary")

    def clean_domain(self) -> str:
        typed = self.cleaned_data["domain"]
        before_port, colon, port = typed.strip().rpartition(":")
        # Only a port is dropped: "https://shop.example.com" is not the host "https".
        domain = hostname_normalize(typed) if not colon or (port.isdigit() and ":" not in before_port) else ""
        if not HOSTNAME_RE.match(domain):
            raise forms.ValidationError(
                f"{typed!r} is not a host name: letters, digits and hyphens in labels separated by dots (e.g. "
                f"shop.example.com), without a scheme, path, spaces or underscores")
        return domain

    def clean(self) -> dict:
        cleaned = super().clean()
        tenant = cleaned.get("tenant") or (self.instance.tenant if self.instance.tenant_id else None)
        if (cleaned.get("domain") == hostname_normalize(settings.PLATFORM_PUBLIC_DOMAIN) and tenant is not None
                and tenant.schema_name != get_public_schema_name()):
            self.add_error("domain", f"{cleaned['domain']!r} is the platform's own host name")
        return cleaned


class DomainInline(admin.TabularInline):
    model = Domain
    form = DomainForm
    extra = 0


def _usage(tenant: Tenant) -> dict:
    cached = getattr(tenant, "_usage", None)
    if cached is not None:
        return cached
    from apps.bots.models import Bot
    from apps.llm.quota import quota_used
    from apps.sessions.models import ChatSession

    if tenant.schema_name in ("public", settings.TENANT_BASE_SCHEMA):
        tenant._usage = {"bots": "-", "sessions_7d": "-", "tokens_today": "-"}  # no tenant tables there
        return tenant._usage
    since = timezone.now() - timedelta(days=7)
    try:
        # A savepoint: a failing count must not abort the admin request's transaction.
        with transaction.atomic(), schema_context(tenant.schema_name):
            usage = {"bots": Bot.objects.count(),
                     "sessions_7d": ChatSession.objects.filter(last_activity__gte=since).count(),
                     "tokens_today": quota_used(tenant.schema_name)}
    except Exception as exc:  # noqa: BLE001 - a broken tenant is shown as such, the list still renders
        usage = {"bots": "?", "sessions_7d": "?", "tokens_today": "?", "error": type(exc).__name__}
    tenant._usage = usage
    return usage


def _audit(tenant: Tenant, action: str, request, summary: dict | None = None) -> None:
    from apps.compliance.services import audit_record

    with schema_context(tenant.schema_name):
        audit_record(action=action, actor=f"support:{request.user.get_username()}", object_type="tenant",
                     object_id=tenant.schema_name, summary=summary or "")


# Fields of the change form whose changes go to the tenant's audit log as `tenant.settings_changed` (ready and
# the OIDC organisation have their own events).
AUDITED_SETTINGS = ("name", "llm_daily_tokens", "encrypt_messages")


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "schema_name", "ready", "bots", "sessions_7d", "tokens_today", "llm_daily_tokens",
                    "created_at")
    list_filter = ("ready",)
    list_per_page = 25  # each row counts inside its schema
    search_fields = ("name", "schema_name", "domains__domain")
    # Schema names are fixed at creation: renaming would orphan the data. Create tenants with the
    # `tenant_create` command or service, which clones the template and creates the first admin.
    readonly_fields = ("schema_name", "created_at")
    fields = ("name", "schema_name", "ready", "oidc_organization_id", "llm_daily_tokens", "encrypt_messages",
              "created_at")
    inlines = [DomainInline]
    actions = ["suspend", "resume"]

    @admin.display(description="bots")
    def bots(self, obj: Tenant):
        return _usage(obj)["bots"]

    @admin.display(description="sessions (7 days)")
    def sessions_7d(self, obj: Tenant):
        return _usage(obj)["sessions_7d"]

    @admin.display(description="LLM tokens today")
    def tokens_today(self, obj: Tenant):
        return _usage(obj)["tokens_today"]

    @admin.action(description="Suspend the selected tenants (their hosts answer 503, jobs stop)")
    def suspend(self, request, queryset):
        self._ready_set(request, queryset, ready=False)

    @admin.action(description="Resume the selected tenants")
    def resume(self, request, queryset):
        self._ready_set(request, queryset, ready=True)

    def _ready_set(self, request, queryset, *, ready: bool) -> None:
        platform = platform_schema_names()
        if queryset.filter(schema_name__in=platform).exists():
            messages.warning(request, "The platform tenant and the template cannot be suspended or resumed; "
                                      "they were left as they are.")
        changed = [tenant.schema_name for tenant in queryset.exclude(schema_name__in=platform)
                   if tenant_ready_set(tenant=tenant, ready=ready, actor=f"support:{request.user.get_username()}")]
        messages.success(request, f"{'Resumed' if ready else 'Suspended'}: {', '.join(changed) or 'none'}.")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.schema_name in platform_schema_names():
            # Not ready, the platform host answers 503 to everything, this admin included; the template is
            # never ready (the tick would run its jobs).
            return (*self.readonly_fields, "ready")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        obj.oidc_organization_id = obj.oidc_organization_id.strip()
        ready_changed = change and "ready" in form.changed_data
        if ready_changed:  # saved by tenant_ready_set, with its tenant.suspended / tenant.resumed audit row
            ready, obj.ready = obj.ready, not obj.ready
        super().save_model(request, obj, form, change)
        if ready_changed:
            tenant_ready_set(tenant=obj, ready=ready, actor=f"support:{request.user.get_username()}")
            obj.ready = ready
        tenant_settings_forget(obj.schema_name)
        if change and "oidc_organization_id" in form.changed_data:
            # Who may administer the tenant through the platform's provider: on the tenant's audit log.
            _audit(obj, "tenant.oidc_organization_set", request,
                   summary={"oidc_organization_id": obj.oidc_organization_id})
        changed = [name for name in AUDITED_SETTINGS if change and name in form.changed_data]
        if changed:  # the tenant's quota and encryption at rest are its admins' business too
            _audit(obj, "tenant.settings_changed", request, summary={name: getattr(obj, name) for name in changed})

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    form = DomainForm
    list_display = ("domain", "tenant", "is_primary")
    search_fields = ("domain", "tenant__name")
