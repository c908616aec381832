"""Running a bot's scripts: the compiled program for a stored script, started with the bot's `param-*`.

Compiled programs hold closures, so they are not stored: each process compiles a script once per source
hash and keeps it in a bounded cache. Deploys store the source, hash and compile errors (apps.bots.services).
"""

from __future__ import annotations

from django.db import connection

from apps.basic.compiler import Program, compile_source
from apps.basic.host import Host
from apps.basic.vm import VM, RunResult
from apps.bots.config_csv import config_params
from apps.bots.models import Bot, BotScript
from apps.bots.selectors import bot_config_values
from apps.core.memo import ProcessLRU, in_open_transaction

# Compiled programs kept per process; a busy worker serves a few hundred scripts at most, and the oldest
# unused one is compiled again in milliseconds if it comes back.
PROGRAM_CACHE_SIZE = 512

_programs: ProcessLRU[str, Program] = ProcessLRU(PROGRAM_CACHE_SIZE)
# Loaded scripts (the row's facts and its program) per (schema, bot, the bot's creation time, its
# scripts_revision, name): a chat turn resuming a dialog finds its program without reading the script row.
LOADED_SCRIPTS_MAX = 2048
_loaded: ProcessLRU[tuple, Program] = ProcessLRU(LOADED_SCRIPTS_MAX)


class ScriptUnavailable(LookupError):
    """The script does not exist, or it does not compile (its errors are shown in the console)."""


def program_for(script: BotScript) -> Program:
    if not script.ok:
        first = script.errors[0]
        raise ScriptUnavailable(
            f"script '{script.name}' has a compile error at line {first['line']}: {first['message']}"
        )
    key = f"{script.source_hash}:{script.name}"
    program = _programs.get(key)
    if program is None:
        program = _programs[key] = compile_source(script.source, script.name)
    return program


def bot_script_program(bot: Bot, name: str) -> Program:
    """The compiled program of the bot's script `name` (ScriptUnavailable: none, or it does not compile).

    Kept per process by the bot's `scripts_revision`, which every ORM write to its scripts bumps (see
    apps.bots.models.BotRevisionedRow): another process's deploy is seen on the next read of the bot row (a
    turn reads it with its session). Writes that bypass the ORM must bump the revision themselves."""
    name = name.lower()
    key = _loaded_key(bot, name)
    program = _loaded.get(key)
    if program is not None:
        return program
    script = BotScript.objects.filter(bot=bot, name=name).first()
    if script is None:
        raise ScriptUnavailable(f"bot '{bot.name}' has no script named '{name}'")
    program = program_for(script)
    if not in_open_transaction():  # a row this transaction may still change or roll back is not shared
        _loaded[key] = program
    return program


def _loaded_key(bot: Bot, name: str) -> tuple:
    # created_at: schema names and bot ids come back when a tenant is deleted and another created.
    return (connection.schema_name, bot.pk, getattr(bot, "created_at", None), getattr(bot, "scripts_revision", 0),
            name.lower())


def bot_scripts_forget(schema: str, bot_id: int) -> None:
    """Drop this process's loaded scripts of a bot (its scripts changed)."""
    _loaded.forget(lambda key: key[0] == schema and key[1] == bot_id)


def script_params(bot: Bot) -> dict[str, object]:
    """The bot's `param-*` configuration as script variables (spec 2.3)."""
    return config_params(bot_config_values(bot))


# CALL nested this deep (a script calling itself, directly or through others) is an error, not a Python
# recursion error or a turn that never ends.
CALL_DEPTH_MAX = 8


def script_call(*, host: Host, program, name: str, args: list, params: dict) -> object:
    """CALL "other": run `program` (another script of the bot) on `host` to its end and return its RETURN.
    Its PARAMs take `args` in order over `params` (the bot's param-* values). A script that errors, or waits
    for input (HEAR, WAIT: a CALL cannot suspend), is a HostError in the caller."""
    from apps.basic.host import HostError

    depth = getattr(host, "call_depth", 0)
    if depth >= CALL_DEPTH_MAX:
        raise HostError(f"CALL nested deeper than {CALL_DEPTH_MAX} scripts")
    names = [p.get("name") for p in (program.metadata.get("params") or []) if isinstance(p, dict)]
    call_args = {str(p).lower(): v for p, v in zip(names, args, strict=False) if p}
    previous = getattr(host, "script_name", "")
    host.call_depth, host.script_name = depth + 1, name
    try:
        result = VM(program, host).start({**params, **call_args})
    finally:
        host.call_depth, host.script_name = depth, previous
    if result.status == "error":
        raise HostError(f"{name}: {(result.error or {}).get('message')}")
    if result.status == "waiting":
        raise HostError(f"{name} waits for input; a script run with CALL cannot (use it as a tool instead)")
    return result.value


def script_start(*, bot: Bot, name: str, host: Host, args: dict | None = None) -> RunResult:
    """Run a bot's script from its first line; tool arguments override `param-*` values of the same name."""
    return VM(bot_script_program(bot, name), host).start({**script_params(bot), **(args or {})})
