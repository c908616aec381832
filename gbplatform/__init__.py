"""The Django project: settings, URL configurations, ASGI routing and the Celery app."""

from gbplatform.celery import app as celery_app

__all__ = ("celery_app",)
