"""Bots of a tenant (tenant schema). One Bot per `<name>.gbai` package; packages arrive with issue 4."""

from django.core.validators import RegexValidator
from django.db import models

# Upstream bot names are path segments (`<bot>.gbai`) and URL segments (`/<bot>/`): keep them plain.
BOT_NAME_VALIDATOR = RegexValidator(r"^[a-z0-9][a-z0-9_-]{0,62}$", "lower-case letters, digits, - and _ only")


class Bot(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[BOT_NAME_VALIDATOR])
    display_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
