"""Reads for the console: a bot's schedules and its job runs (current tenant)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from apps.automation.models import JobRun
from apps.bots.models import Bot, BotSchedule

# Runs per console page; the most a caller may ask for in one page.
JOB_RUNS_PAGE_SIZE = 25
JOB_RUNS_PAGE_SIZE_MAX = 100


@dataclass(frozen=True)
class JobRunPage:
    runs: list[JobRun]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def job_run_list(*, bot: Bot, page: int = 1, page_size: int = JOB_RUNS_PAGE_SIZE, status: str | None = None,
                 script_name: str | None = None) -> JobRunPage:
    """The bot's runs, newest due time first, one page (pages count from 1; out of range: clamped)."""
    page_size = min(max(1, int(page_size)), JOB_RUNS_PAGE_SIZE_MAX)
    runs = JobRun.objects.filter(bot=bot)
    if status:
        runs = runs.filter(status=status)
    if script_name:
        runs = runs.filter(script_name=script_name.lower())
    total = runs.count()
    last = max(1, -(-total // page_size))
    page = min(max(1, int(page)), last)
    start = (page - 1) * page_size
    items = list(runs.order_by("-scheduled_for", "-id").defer("state")[start:start + page_size])
    return JobRunPage(runs=items, page=page, page_size=page_size, total=total)


def schedule_list(*, bot: Bot) -> QuerySet[BotSchedule]:
    """The bot's schedules (one per SET SCHEDULE of a compiled script), next due first."""
    return BotSchedule.objects.filter(bot=bot).select_related("script").order_by("next_run_at", "id")
