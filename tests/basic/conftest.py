"""Helpers for the BASIC engine tests: run a script with the in-memory host and a fixed clock."""

from __future__ import annotations

import datetime as dt
import json

from apps.basic.builtins import FixedContext
from apps.basic.compiler import compile_source
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM, RunResult

FIXED_NOW = dt.datetime(2024, 5, 17, 10, 30, 0, tzinfo=dt.UTC)


class Runner:
    """Compile once, run, and answer HEARs through a JSON round trip of the state (like production)."""

    def __init__(self, source: str, host: InMemoryHost | None = None, **vm_kwargs: object) -> None:
        self.source = source
        self.program = compile_source(source, "script")
        self.host = host or InMemoryHost()
        self.vm_kwargs = vm_kwargs
        self.result: RunResult | None = None

    def vm(self) -> VM:
        return VM(compile_source(self.source, "script"), self.host, ctx=FixedContext(FIXED_NOW),
                  **self.vm_kwargs)  # type: ignore[arg-type]

    def start(self, args: dict | None = None) -> RunResult:
        self.result = self.vm().start(args)
        return self.result

    def answer(self, text: str | None) -> RunResult:
        assert self.result is not None and self.result.status == "waiting", self.result
        state = json.loads(json.dumps(self.result.state))
        self.result = self.vm().resume(state, text)
        return self.result


def run(source: str, *inputs: str, args: dict | None = None, host: InMemoryHost | None = None) -> Runner:
    r = Runner(source, host)
    r.start(args)
    for text in inputs:
        r.answer(text)
    return r

