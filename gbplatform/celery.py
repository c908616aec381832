"""The Celery application: tenant-aware (tenant-schemas-celery), configured from Django settings.

Queues: dispatch (beat's quick platform tasks: the schedule tick, sweeps, per-tenant dispatchers; never behind a
backlog of jobs), drive (DriveMonitor), index (KB indexing), jobs (SET SCHEDULE runs and per-tenant housekeeping),
mail (outgoing and incoming email). Tasks default to TenantScopedTask: a tenant task with no tenant is
refused. Platform-wide tasks use `base=PlatformTask` explicitly.
"""

import os

from kombu import Queue
from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gbplatform.settings.dev")

app = CeleryApp("gbplatform", task_cls="apps.tenants.celery:TenantScopedTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("dispatch", "drive", "index", "jobs", "mail")]
app.autodiscover_tasks()
