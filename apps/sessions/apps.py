from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "apps.sessions"
    label = "chat"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"
