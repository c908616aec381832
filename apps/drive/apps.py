from django.apps import AppConfig


class DriveConfig(AppConfig):
    name = "apps.drive"
    label = "drive"
    verbose_name = "Drive"
