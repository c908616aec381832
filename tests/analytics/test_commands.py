"""`analytics_backfill`: recomputes the asked days of one tenant; bad arguments are refused with the reason."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_context

from apps.analytics.models import DailyStat
from apps.analytics.services import analytics_today
from apps.sessions.models import ChatUser
from tests.analytics.conftest import BOT, USER, at, session_make

pytestmark = pytest.mark.django_db


def test_backfill_recomputes_the_days_of_one_tenant(canary_tenants, dataset):
    today = analytics_today()
    with schema_context(canary_tenants.a.schema_name):
        user = ChatUser.objects.create(username="dora")
        session_make(dataset.bot, user, channel="web", started=at(today, 0, 5),
                     turns=[{"kind": USER, "content": "hi"}, {"kind": BOT, "content": "hello", "meta": {}}])
    out = io.StringIO()
    call_command("analytics_backfill", "--tenant", canary_tenants.a.schema_name, "--days", "1", stdout=out)
    assert f"{canary_tenants.a.schema_name}: {today}..{today}: 1 daily rows" in out.getvalue()
    with schema_context(canary_tenants.a.schema_name):
        assert list(DailyStat.objects.values_list("day", "messages")) == [(today, 2)]
    with schema_context(canary_tenants.b.schema_name):
        assert not DailyStat.objects.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--tenant", "no_such_schema"], "no tenant with schema 'no_such_schema'"),
    (["--days", "0"], "--days must be between 1 and"),
])
def test_backfill_refuses_bad_arguments(canary_tenants, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("analytics_backfill", *args)
