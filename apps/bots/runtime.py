"""Running a bot's scripts: the compiled program for a stored script, started with the bot's `param-*`.

Compiled programs hold closures, so they are not stored: each process compiles a script once per source
hash and keeps it in a bounded cache. Deploys store the source, hash and compile errors (apps.bots.services).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from apps.basic.compiler import Program, compile_source
from apps.basic.host import Host
from apps.basic.vm import VM, RunResult
from apps.bots.config_csv import config_params
from apps.bots.models import Bot, BotScript
from apps.bots.selectors import bot_config_values

# Compiled programs kept per process; a busy worker serves a few hundred scripts at most, and the oldest
# unused one is compiled again in milliseconds if it comes back.
PROGRAM_CACHE_SIZE = 512

_programs: OrderedDict[str, Program] = OrderedDict()
_programs_lock = threading.Lock()


class ScriptUnavailable(LookupError):
    """The script does not exist, or it does not compile (its errors are shown in the console)."""


def program_for(script: BotScript) -> Program:
    if not script.ok:
        first = script.errors[0]
        raise ScriptUnavailable(
            f"script '{script.name}' has a compile error at line {first['line']}: {first['message']}"
        )
    key = f"{script.source_hash}:{script.name}"
    with _programs_lock:
        program = _programs.get(key)
        if program is not None:
            _programs.move_to_end(key)
            return program
    program = compile_source(script.source, script.name)
    with _programs_lock:
        _programs[key] = program
        while len(_programs) > PROGRAM_CACHE_SIZE:
            _programs.popitem(last=False)
    return program


def script_params(bot: Bot) -> dict[str, object]:
    """The bot's `param-*` configuration as script variables (spec 2.3)."""
    return config_params(bot_config_values(bot))


def script_start(*, bot: Bot, name: str, host: Host, args: dict | None = None) -> RunResult:
    """Run a bot's script from its first line; tool arguments override `param-*` values of the same name."""
    script = BotScript.objects.filter(bot=bot, name=name.lower()).first()
    if script is None:
        raise ScriptUnavailable(f"bot '{bot.name}' has no script named '{name}'")
    return VM(program_for(script), host).start({**script_params(bot), **(args or {})})
