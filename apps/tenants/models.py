"""Tenants and their host names, kept in the public schema.

Every tenant owns one PostgreSQL schema holding all of its data; a Domain row maps a host name to it.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower
from django_tenants.models import DomainMixin, TenantMixin


class Tenant(TenantMixin):
    name = models.CharField(max_length=100)
    # False while provisioning (or for the template schema): such a tenant serves nothing and runs no jobs.
    ready = models.BooleanField(default=False)
    # Chat message content sealed at rest (apps.sessions.fields); transcript text search then skips it.
    encrypt_messages = models.BooleanField(default=False)
    # LLM tokens this tenant may use per UTC day; empty: the platform's LLM_TENANT_DAILY_TOKENS.
    llm_daily_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    # The tenant's organisation at the platform's default OIDC provider (settings OIDC_ISSUER; Zitadel's
    # organisation id, the `urn:zitadel:iam:user:resourceowner:id` claim). Through that shared provider only
    # this organisation's users, with the roles it granted, sign in to the console; empty: nobody does
    # (apps.accounts). Set by support staff or provisioning, never by the tenant. Unused when the tenant
    # configures its own provider (accounts.OidcConfig).
    oidc_organization_id = models.CharField(
        "organisation at the platform sign-in provider", max_length=200, blank=True,
        help_text="Zitadel organisation id (resource owner id) of this tenant at the platform's OIDC provider "
                  "(OIDC_ISSUER). Only users of this organisation, with roles it granted, may sign in to the "
                  "console through that provider; empty: nobody can. Unused when the tenant has its own provider.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # New schemas are cloned from settings.TENANT_BASE_SCHEMA by django-tenants when saved.
    auto_create_schema = True
    # Dropping a schema is done on purpose by tenant_delete, never as a side effect of a row delete.
    auto_drop_schema = False
    # The template holds structure only; a tenant starts empty.
    clone_mode = "NODATA"

    class Meta:
        ordering = ["schema_name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"

    def create_schema(self, check_if_exists=False, sync_schema=True, verbosity=1):
        """Clone the template with our fast cloner when it can; django-tenants' general path otherwise."""
        from django.conf import settings
        from django_tenants.utils import schema_exists

        from apps.tenants.schema_clone import TemplateNotCloneable, schema_clone

        template = settings.TENANT_BASE_SCHEMA
        if (check_if_exists and schema_exists(self.schema_name)) or not sync_schema:
            return super().create_schema(check_if_exists, sync_schema, verbosity)
        if self.schema_name in {template, "public"} or not schema_exists(template):
            return super().create_schema(check_if_exists, sync_schema, verbosity)
        try:
            schema_clone(template, self.schema_name)
        except TemplateNotCloneable:
            return super().create_schema(check_if_exists, sync_schema, verbosity)
        return True


class Domain(DomainMixin):
    class Meta:
        constraints = [
            # Host names are case-insensitive; store and match them lower-case only.
            models.CheckConstraint(condition=models.Q(domain=Lower("domain")), name="domain_is_lowercase"),
        ]

    def __str__(self) -> str:
        return self.domain


class ScheduleIndex(models.Model):
    """One row per `SET SCHEDULE` of every tenant (a `bots.BotSchedule` in that tenant's schema): the small
    public table the automation beat tick reads, so finding due jobs is one query, not one per tenant.

    Written in the same transaction as the tenant's schedule rows (apps.bots.services.schedules_sync and
    script_remove), so the index never names a schedule that was not committed. The cron and time zone are
    copied here so the tick can compute the next run without entering the tenant's schema. Rows go with
    their tenant (cascade); a row whose schedule vanished otherwise (its bot deleted) is dropped by the
    first run that finds no schedule (apps.automation.services).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="schedule_index")
    schedule_id = models.BigIntegerField()  # bots.BotSchedule.pk in the tenant's schema
    cron = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64, default="UTC")
    next_run_at = models.DateTimeField()
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "schedule_id"], name="schedule_index_tenant_schedule_unique"),
        ]
        indexes = [
            # The tick's query: enabled rows by due time.
            models.Index(fields=["next_run_at"], condition=models.Q(enabled=True), name="schedule_index_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.schedule_id} {self.cron} @ {self.next_run_at:%Y-%m-%d %H:%M}"
