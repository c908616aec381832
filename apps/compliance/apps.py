"""The compliance app: the tenant's append-only audit log and the security headers of every response.

`ready()` connects Django's auth signals (login, logout, failed login) to the audit log here, so sign-in
events are recorded without the auth views or any other app knowing about auditing.
"""

from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "apps.compliance"
    label = "compliance"
    verbose_name = "Compliance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.compliance import signals

        signals.auth_signals_connect()
