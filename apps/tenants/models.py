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
