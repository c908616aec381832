"""The per-process loaded scripts (apps.bots.runtime.bot_script_program): a script row is read once per scripts
revision, stale after any ORM write to the bot's scripts (this process drops it, others see a new revision),
and never shared between tenants whose bots share a primary key."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.basic.host import InMemoryHost
from apps.basic.vm import VM
from apps.bots import runtime
from apps.bots.models import Bot, BotScript
from apps.bots.runtime import ScriptUnavailable, bot_script_program
from apps.bots.services import script_remove, script_sync

pytestmark = pytest.mark.django_db


def _fresh(bot: Bot) -> Bot:
    """The bot as another turn reads it (its current revision)."""
    return Bot.objects.get(pk=bot.pk)


def _says(bot: Bot, name: str = "hello") -> str:
    host = InMemoryHost()
    VM(bot_script_program(bot, name), host).start({})
    return " ".join(host.messages)


def _sync(bot: Bot, source: str, name: str = "hello") -> None:
    assert script_sync(bot=bot, path=f"{bot.name}.gbai/{bot.name}.gbdialog/{name}.bas", data=source.encode()).ok


def test_a_script_is_read_once_per_revision(canary_tenants, django_assert_num_queries):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="scripts-once")
        _sync(bot, 'TALK "one"')
        bot = _fresh(bot)
        assert _says(bot) == "one"
        with django_assert_num_queries(0):
            assert _says(bot) == "one"
            assert _says(bot, "HELLO") == "one"  # names are case-insensitive, as the files'


@pytest.mark.parametrize("write", ["service", "update", "save", "delete", "remove"])
def test_every_orm_write_to_the_scripts_is_seen_by_the_next_run(canary_tenants, write):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name=f"scripts-{write}")
        _sync(bot, 'TALK "old"')
        before = _fresh(bot)
        assert _says(before) == "old"
        if write == "service":
            _sync(bot, 'TALK "new"')
        elif write == "update":
            BotScript.objects.filter(bot=bot, name="hello").update(source='TALK "new"', source_hash="changed")
        elif write == "save":
            script = BotScript.objects.get(bot=bot, name="hello")
            script.source, script.source_hash = 'TALK "new"', "changed"
            script.save()
        elif write == "delete":
            BotScript.objects.get(bot=bot, name="hello").delete()
        else:
            script_remove(bot=bot, path=f"{bot.name}.gbai/{bot.name}.gbdialog/hello.bas")
        if write in ("delete", "remove"):
            with pytest.raises(ScriptUnavailable, match="no script named 'hello'"):
                _says(_fresh(bot))
            with pytest.raises(ScriptUnavailable):
                _says(before)  # an instance read before the write too
        else:
            assert _says(_fresh(bot)) == "new"
            assert _says(before) == "new"
        assert _fresh(bot).scripts_revision > before.scripts_revision


def test_another_process_sees_the_new_revision(canary_tenants):
    """A process that loaded the old script keeps it under the old revision only: the bot row it reads for its
    next turn carries the new revision, which it has never loaded."""
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="scripts-other-process")
        _sync(bot, 'TALK "old"')
        old = _fresh(bot)
        stale = bot_script_program(old, "hello")
        _sync(bot, 'TALK "new"')
        # The other process still holds its copy (nothing told it): put it back as it would have it.
        runtime._loaded[runtime._loaded_key(old, "hello")] = stale
        assert _says(_fresh(bot)) == "new"


def test_a_script_that_does_not_compile_is_never_loaded(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="scripts-broken")
        script_sync(bot=bot, path="scripts-broken.gbai/scripts-broken.gbdialog/hello.bas", data=b"IF x THEN\n")
        with pytest.raises(ScriptUnavailable, match="compile error at line 1: IF is never closed"):
            _says(_fresh(bot))
        _sync(bot, 'TALK "fixed"')
        assert _says(_fresh(bot)) == "fixed"


def test_tenants_whose_bots_share_a_primary_key_never_share_a_script(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    for tenant in (a, b):
        with schema_context(tenant.schema_name):
            _sync(Bot.objects.get(pk=tenant.bot_pk), f'TALK "{tenant.canary}"', name="shared-name")
    for tenant in (a, b, a):
        with schema_context(tenant.schema_name):
            assert _says(Bot.objects.get(pk=tenant.bot_pk), "shared-name") == tenant.canary
