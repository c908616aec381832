"""`python manage.py basic check|run|tool ...`: thin wrapper around `apps.basic.cli.main`."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand

from apps.basic import cli


class Command(BaseCommand):
    help = "Check, run or describe General Bots BASIC scripts (see apps/basic/cli.py)."
    requires_system_checks: list = []  # a compiler needs no database or app checks

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def handle(self, *args: str, **options: object) -> None:
        code = cli.main(list(options.get("args") or args), out=self.stdout)
        if code:
            # exit status only: the findings are already on stdout in the documented format
            raise SystemExit(code)
