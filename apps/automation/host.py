"""The BASIC host of a scheduled job: a bot's host (config, memory, tables, drive) with no user session.

TALK has nobody to talk to, so it goes to the job's output (shown with the run in the console); HEAR has
nobody to answer it, so the run ends with an error at the HEAR (apps.automation.services); TALK TO an email
address and SEND MAIL deliver through the mail service (apps.mail), queued when the job's writes commit;
LLM asks the bot's model (apps.llm).
"""

from __future__ import annotations

import logging

from apps.basic.limits import MAX_LOG_MESSAGE_CHARS
from apps.bots.host import BotHost
from apps.bots.models import Bot

logger = logging.getLogger(__name__)

# A job's output is a log for a person reading the console, not storage: beyond this many characters the
# rest of the run's TALK lines are dropped (the run itself goes on) and the output says it was cut.
JOB_OUTPUT_MAX_CHARS = 64 * 1024
OUTPUT_TRUNCATED = "[output truncated: a job keeps at most {limit} characters of TALK output]"
# The user a job runs as (upstream runs schedules as a user whose id is the bot's id, titled "Automation").
JOB_USER_NAME = "Automation"
NO_USER_TO_HEAR = "no user to hear from in a scheduled job"


class JobHost(BotHost):
    def __init__(self, bot: Bot, *, run_id: int, output: str = "") -> None:
        super().__init__(
            bot,
            user={"id": f"bot-{bot.pk}", "name": JOB_USER_NAME},
            session={"id": f"job-{run_id}", "channel": "automation"},
        )
        self.output = output
        self.truncated = OUTPUT_TRUNCATED.format(limit=JOB_OUTPUT_MAX_CHARS) in output

    # -- output ------------------------------------------------------------------------------------
    def _append(self, line: str) -> None:
        if self.truncated:
            return
        text = (self.output + "\n" if self.output else "") + line
        if len(text) > JOB_OUTPUT_MAX_CHARS:
            marker = OUTPUT_TRUNCATED.format(limit=JOB_OUTPUT_MAX_CHARS)
            text = text[: JOB_OUTPUT_MAX_CHARS - len(marker) - 1] + "\n" + marker
            self.truncated = True
        self.output = text

    def talk(self, text: str) -> None:
        self._append(str(text))

    def log(self, text: str) -> None:
        """PRINT: the server log, and the job's output (it is the job's log); one line is at most
        MAX_LOG_MESSAGE_CHARS (the VM cuts PRINT there already; a caller that does not must not flood the log)."""
        text = str(text)[:MAX_LOG_MESSAGE_CHARS]
        logger.info("job PRINT: %s", text, extra={"bot": self.bot.name})
        self._append(f"PRINT: {text}")

    # A HEAR menu pushes its options as suggestions before suspending: with no user they go nowhere, and
    # the HEAR itself then ends the run with NO_USER_TO_HEAR.
    def add_suggestion(self, kind: str, value: str, label: str) -> None:
        return None

    def clear_suggestions(self) -> None:
        return None

    def add_switcher(self, switcher_id: str, label: str) -> None:
        return None

    def clear_switchers(self) -> None:
        return None

    def call_script(self, name: str, args: list) -> object:
        """CALL "other.bas" in a job: the bot's other script runs to its end in this run (no HEAR there either)."""
        from apps.basic.host import HostError
        from apps.bots.runtime import ScriptUnavailable, bot_script_program, script_call, script_params

        name = str(name).strip().lower().removesuffix(".bas")
        try:
            program = bot_script_program(self.bot, name)
        except ScriptUnavailable as exc:
            raise HostError(str(exc)) from None
        return script_call(host=self, program=program, name=name, args=list(args), params=script_params(self.bot))

    # LLM, SEND MAIL and TALK TO (an e-mail address) are BotHost's: a job delivers like any other run.
