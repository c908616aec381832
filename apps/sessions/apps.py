from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "apps.sessions"
    label = "chat"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from apps.sessions import checks  # noqa: F401 - registers the connection budget check
        from apps.tenants.models import Tenant
        from apps.tenants.selectors import tenant_settings_forget

        def tenant_saved(sender, instance, **kwargs) -> None:
            tenant_settings_forget(instance.schema_name)  # this process sees a changed setting at once

        post_save.connect(tenant_saved, sender=Tenant, weak=False, dispatch_uid="chat-tenant-flag")
