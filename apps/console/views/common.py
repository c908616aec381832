"""What every console view shares: rendering with the user's role, confirmation of changes, bot lookup."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from apps.accounts.roles import Role, role_allows
from apps.bots.models import Bot

# The whole numbers console forms and queries take (days, ids) are short: a longer string is not one of them
# (and int() of thousands of digits is slow, or refused).
WHOLE_NUMBER_MAX_DIGITS = 9
_WHOLE_NUMBER = re.compile(rf"[0-9]{{1,{WHOLE_NUMBER_MAX_DIGITS}}}")

CONFIRMED_FIELD = "confirmed"
CONFIRMED_VALUE = "yes"
# Fields never echoed into a confirmation page: the CSRF token is added afresh by the template.
CONFIRM_SKIPPED_FIELDS = frozenset({"csrfmiddlewaretoken", CONFIRMED_FIELD})


def console_render(request: HttpRequest, template: str, context: dict | None = None, *,
                   status: int = 200) -> HttpResponse:
    """Render a console page with the user's role (what the page may offer: buttons only for who may use them)."""
    role = getattr(request, "console_role", None)
    context = dict(context or {})
    context.update(
        console_role=role.value if role else "",
        console_role_label=role.label if role else "",
        can_edit=role_allows(role, Role.EDITOR),
        can_admin=role_allows(role, Role.ADMIN),
    )
    return render(request, template, context, status=status)


def confirmation_page(request: HttpRequest, *, question: str, back: str) -> HttpResponse | None:
    """None when the POST carries confirmed=yes; else the server-rendered confirmation page.

    Every console change is confirmed: the page's <dialog> (static/console/console.js) adds the field after
    the user confirms; without script, this page asks and re-posts the same fields.
    """
    if request.POST.get(CONFIRMED_FIELD) == CONFIRMED_VALUE:
        return None
    fields: Iterable[tuple[str, str]] = [
        (name, value) for name, values in request.POST.lists() if name not in CONFIRM_SKIPPED_FIELDS for value in values
    ]
    return console_render(request, "console/confirm.html", {"question": question, "fields": fields, "back": back})


def bot_or_404(name: str) -> Bot:
    """The bot of the current tenant with that name (another tenant's bot is simply not found)."""
    bot = Bot.objects.filter(name=name).first()
    if bot is None:
        raise Http404(_("No bot named %(name)s in this tenant.") % {"name": name})
    return bot


def whole_number(raw: str | None) -> int | None:
    """The whole number `raw` spells in ASCII digits, or None (`str.isdigit` also takes `²` and other digits
    that int() refuses)."""
    raw = (raw or "").strip()
    return int(raw) if _WHOLE_NUMBER.fullmatch(raw) else None
