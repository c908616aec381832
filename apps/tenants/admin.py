"""Support staff's view of tenants on the public host's Django admin."""

from django.contrib import admin

from apps.tenants.models import Domain, Tenant


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "schema_name", "ready", "created_at")
    list_filter = ("ready",)
    search_fields = ("name", "schema_name", "domains__domain")
    # Schema names are fixed at creation: renaming would orphan the data. Create tenants with the
    # `tenant_create` command or service, which clones the template and creates the first admin.
    readonly_fields = ("schema_name", "created_at")
    inlines = [DomainInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ("domain", "tenant", "is_primary")
    search_fields = ("domain", "tenant__name")
