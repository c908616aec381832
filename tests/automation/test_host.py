"""The job host delivers what a scheduled script sends: SEND MAIL and TALK TO an address go out by SMTP
(the bot's email-* settings, a real aiosmtpd server on loopback) through the mail queue's worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django_tenants.utils import schema_context

from apps.automation.models import JobRun
from apps.automation.services import schedules_tick
from apps.bots import services as bot_services
from apps.bots.models import Bot
from tests.automation.conftest import deploy, outside_test_transaction, runs, schedule_of, wait_for
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.django_db

REPORT = '''SET SCHEDULE "every day at 9am"
open = 3
SEND MAIL "ops@example.com", "Daily report", "Open tickets: " + open
TALK TO "email:boss@example.com", "The report went to ops"
TALK "mailed"
'''


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@outside_test_transaction
def test_a_scheduled_script_mails_a_report(canary_tenants, job_workers, smtp):
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.get()
        config = (f"name,value\nemail-from,reports@example.com\nemail-server,{smtp.host}\n"
                  f"email-port,{smtp.port}\nemail-security,plain\n")
        bot_services.config_sync(bot=bot, data=config.encode())
    try:
        schedule = schedule_of(schema, deploy(schema, "at-report", REPORT))
        schedules_tick(now=schedule.next_run_at + timedelta(seconds=1))
        mails = smtp.wait_for(2)
        by_rcpt = {tuple(m.rcpt_tos): m.message for m in mails}
        report = by_rcpt[("ops@example.com",)]
        assert report["Subject"] == "Daily report" and report["From"].addresses[0].addr_spec == "reports@example.com"
        assert report.get_body(("plain",)).get_content().strip() == "Open tickets: 3"
        note = by_rcpt[("boss@example.com",)]
        assert note.get_body(("plain",)).get_content().strip() == "The report went to ops"
        assert wait_for(lambda: runs(schema, schedule_id=schedule.pk, status=JobRun.Status.OK))
        [run] = runs(schema, schedule_id=schedule.pk)
        assert run.output == "mailed"
    finally:
        with schema_context(schema):
            bot_services.config_clear(bot=bot)


@outside_test_transaction
def test_send_mail_to_a_bad_address_fails_the_job_at_its_line(canary_tenants):
    from apps.automation.services import schedule_run

    schema = canary_tenants.b.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-badmail", 'SET SCHEDULE "every minute"\nTALK "a"\n'
                                                             'SEND MAIL "nobody-at-example", "s", "b"\n'))
    with schema_context(schema):
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at)
    assert run.status == JobRun.Status.ERROR and run.error_line == 3
    assert run.error_message == "SEND MAIL: 'nobody-at-example' is not an e-mail address"


@outside_test_transaction
def test_a_job_asks_the_bots_llm_and_keeps_the_answer_in_its_output(canary_tenants, llm_platform):
    from apps.automation.services import schedule_run

    schema = canary_tenants.a.schema_name
    source = 'SET SCHEDULE "every minute"\nsummary = LLM "Summarise: 3 open tickets"\nTALK summary\n'
    schedule = schedule_of(schema, deploy(schema, "at-llm", source))
    with schema_context(schema):
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at)
    assert run.status == JobRun.Status.OK, run.error_message
    assert run.output == "echo: Summarise: 3 open tickets"
    assert llm_platform.requests[-1].body["messages"][-1]["content"] == "Summarise: 3 open tickets"
