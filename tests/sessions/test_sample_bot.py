"""The sample bot `make run` deploys (samples/demo.gbai) holds a whole conversation through the chat service."""

from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import BotTableRow
from apps.bots.services import bot_deploy
from apps.drive.package import package_read_dir
from apps.sessions import services
from apps.sessions.models import MessageType

pytestmark = pytest.mark.django_db
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "demo.gbai"


def _say(session, text, message_type=MessageType.USER) -> list[str]:
    return [m.content for m in services.turn_run(session, text=text, message_type=message_type)]


def test_the_demo_bot_greets_answers_its_menu_and_books_a_visit_from_its_button(canary_tenants, local_storage):
    with schema_context(canary_tenants.a.schema_name):
        report = bot_deploy(package=package_read_dir(SAMPLE))
        assert report.errors == {}
        session = services.session_bootstrap(bot_name="demo")
        greeting = [m.content for m in services.session_start(session)]
        assert greeting[-1] == "What can I do for you?"
        assert _say(session, "opening hours") == ["We are open Tuesday to Sunday, 9:00 to 18:00."]
        assert _say(session, "book-visit", MessageType.TOOL_EXEC) == ["Who is the visit for?"]
        assert _say(session, "Ana") == ["Which day would you like to come?"]
        reply = _say(session, "2026-12-01")
        assert reply == ["Thank you, Ana. Your visit on 2026-12-01 is booked for a group of 1."]
        row = BotTableRow.objects.get(bot=session.bot, table="visits").data
        assert row == {"name": "Ana", "date": "2026-12-01", "people": 1}
