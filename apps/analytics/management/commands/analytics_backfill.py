"""Recompute the analytics aggregates of past days: `analytics_backfill --tenant <schema> --days 90`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from apps.analytics.services import daily_stats_backfill
from apps.tenants.models import Tenant

# A backfill longer than this is a typo (a year of days is already a lot of work in one go).
BACKFILL_MAX_DAYS = 3660


class Command(BaseCommand):
    help = "Recompute the analytics of the last N days (today included) for one tenant or every tenant."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="schema name of the tenant (default: every ready tenant)")
        parser.add_argument("--days", type=int, default=90)

    def handle(self, *args, tenant: str | None = None, days: int = 90, **options) -> None:
        if not 1 <= days <= BACKFILL_MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {BACKFILL_MAX_DAYS}")
        if tenant:
            if not Tenant.objects.filter(schema_name=tenant).exists():
                raise CommandError(f"no tenant with schema {tenant!r}")
            schemas = [tenant]
        else:
            from apps.tenants.selectors import tenant_list_ready

            schemas = [t.schema_name for t in tenant_list_ready()]
        for schema in schemas:
            with schema_context(schema):
                report = daily_stats_backfill(days=days)
            self.stdout.write(f"{schema}: {report.day_from}..{report.day_to}: {report.stats} daily rows, "
                              f"{report.questions} questions")
