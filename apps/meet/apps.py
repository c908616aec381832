from django.apps import AppConfig


class MeetConfig(AppConfig):
    name = "apps.meet"
    label = "meet"
    verbose_name = "Meetings"
    default_auto_field = "django.db.models.BigAutoField"
