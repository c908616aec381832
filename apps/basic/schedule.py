"""SET SCHEDULE expressions -> 5-field cron (spec 3.8), rule-based, no LLM.

A 5- or 6-field cron is kept (6 fields: the leading seconds field is dropped; 4 fields get `*`
appended); otherwise the natural-language forms of the spec table are recognised. Anything else is a
compile error, so a typo never silently becomes "never runs".
"""

from __future__ import annotations

import functools
import re
from datetime import datetime


class ScheduleError(ValueError):
    """The expression is neither a cron nor a recognised natural-language schedule."""


_NAME = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat)"
_CRON_FIELD = re.compile(rf"^(?:[0-9*/,\-?LW#]|{_NAME})+$")
_DAYS = {"sunday": 0, "sun": 0, "monday": 1, "mon": 1, "tuesday": 2, "tue": 2, "tues": 2, "wednesday": 3,
         "wed": 3, "thursday": 4, "thu": 4, "thurs": 4, "friday": 5, "fri": 5, "saturday": 6, "sat": 6}
_AT = re.compile(r"\bat\s+(noon|midnight|(\d{1,2})(?::(\d{2}))?\s*(am|pm)?)\b")


def _at_time(text: str) -> tuple[int, int] | None:
    m = _AT.search(text)
    if not m:
        return None
    if m.group(1) == "noon":
        return 12, 0
    if m.group(1) == "midnight":
        return 0, 0
    hour, minute, ampm = int(m.group(2)), int(m.group(3) or 0), m.group(4)
    if ampm == "pm" and hour < 12:
        hour += 12
    if ampm == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        raise ScheduleError(f"Could not parse schedule '{text}': {hour}:{minute:02d} is not a time of day")
    return hour, minute


# A schedule must fire at least once within this long from any start: `0 0 30 2 *` (30 February) never does.
# croniter searches forward this far (it gives up after about fifty years).
_REFERENCE_START = datetime(2026, 1, 1)


# Longest cron a schedule may be: the platform stores it in columns of 100 characters (the bot's schedule, the
# public schedule index, each run's record), and a valid longer one ("0,1,2,...,59 * * * *") failed the deploy
# with an internal database error. Ranges and steps say the same in a few characters (0-59, */5).
CRON_MAX_CHARS = 100


def to_cron(expression: str) -> str:
    """Translate a schedule expression into a 5-field cron string that croniter accepts and that fires."""
    cron = _to_cron(expression)
    if len(cron) > CRON_MAX_CHARS:
        raise ScheduleError(f"Schedule '{expression[:40]}...' is {len(cron)} characters as a cron; the limit is "
                            f"{CRON_MAX_CHARS} (CRON_MAX_CHARS): use ranges or steps (0-59, */5)")
    problem = _cron_problem(cron)
    if problem is not None:
        raise ScheduleError(f"Could not parse schedule '{expression}': {problem}")
    return cron


# Crons whose check is remembered: croniter takes a quarter of a millisecond per cron, and a script may repeat
# one SET SCHEDULE thousands of times (the compiler counts it once); a process meets few different crons.
_CRON_CHECKS_CACHED = 1024


@functools.lru_cache(maxsize=_CRON_CHECKS_CACHED)
def _cron_problem(cron: str) -> str | None:
    """Why croniter refuses `cron` (or finds no time it fires), None when it is fine."""
    from croniter import croniter

    try:
        croniter(cron, _REFERENCE_START).get_next(datetime)
    except (ValueError, KeyError) as exc:  # croniter's errors are ValueErrors; a bad name is a KeyError
        return str(exc)
    return None


def _to_cron(expression: str) -> str:
    text = " ".join(expression.strip().lower().split())
    fields = text.split(" ")
    if 4 <= len(fields) <= 6 and all(_CRON_FIELD.match(f) for f in fields) and any(
            c.isdigit() or c == "*" for c in text):
        if len(fields) == 6:
            fields = fields[1:]
        elif len(fields) == 4:
            fields.append("*")
        return " ".join(fields)
    at = _at_time(text)
    hour, minute = at if at else (0, 0)
    m = re.fullmatch(r"every (\d+) minutes?( during business hours)?", text)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 59:
            raise ScheduleError(f"Could not parse schedule '{expression}': minutes must be 1-59")
        return f"*/{n} 9-17 * * 1-5" if m.group(2) else f"*/{n} * * * *"
    m = re.fullmatch(r"every (\d+) hours?", text)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 23:
            raise ScheduleError(f"Could not parse schedule '{expression}': hours must be 1-23")
        return f"0 */{n} * * *"
    m = re.fullmatch(r"every hour from (\d{1,2}) to (\d{1,2})", text)
    if m:
        return f"0 {int(m.group(1))}-{int(m.group(2))} * * *"
    simple = {"every minute": "* * * * *", "every hour": "0 * * * *", "hourly": "0 * * * *",
              "business hours": "0 9-17 * * 1-5", "every hour during business hours": "0 9-17 * * 1-5"}
    if text in simple:
        return simple[text]
    base = _AT.sub("", text).strip()
    if base in ("", "every day", "daily") and (base or at):
        return f"{minute} {hour} * * *"
    if base in ("every week", "weekly"):
        return f"{minute} {hour} * * 0"
    if base in ("every month", "monthly"):
        return f"{minute} {hour} 1 * *"
    if base in ("every year", "yearly", "annually"):
        return f"{minute} {hour} 1 1 *"
    if base in ("weekdays", "every weekday"):
        return f"{minute} {hour} * * 1-5"
    if base in ("weekends", "every weekend"):
        return f"{minute} {hour} * * 0,6"
    m = re.fullmatch(r"(?:every )?(\w+)", base)
    if m and m.group(1) in _DAYS:
        return f"{minute} {hour} * * {_DAYS[m.group(1)]}"
    raise ScheduleError(f"Could not parse schedule '{expression}'")


def _fixed_hour(cron: str) -> bool:
    fields = cron.split()
    return len(fields) >= 2 and not fields[1].startswith("*")


def cron_step(it, cron: str, *, forward: bool = True) -> datetime:
    """The next (or previous) time of croniter `it` over `cron`, without the second pass of a wall time that
    repeats when clocks go back, for a cron fixed to some hours: a daily 01:30 job ran at 01:30 summer time
    and again at 01:30 winter time, an hour later. Classic cron runs such a job once; a cron with a wildcard
    hour follows real time and keeps both passes."""
    step = it.get_next if forward else it.get_prev
    moment = step(datetime)
    if _fixed_hour(cron):
        while moment.fold == 1 and moment.utcoffset() != moment.replace(fold=0).utcoffset():
            moment = step(datetime)
    return moment
