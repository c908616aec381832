"""The GET forms of the conversations and analytics pages: bad input gets a specific message, never a 500."""

from __future__ import annotations

from datetime import date, timedelta

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.analytics.selectors import ANALYTICS_MAX_DAYS, SEARCH_MAX_CHARS, AnalyticsFilters, ConversationFilters
from apps.analytics.services import analytics_today
from apps.bots.models import Bot

# The analytics page's range when none is chosen: the last 30 days, today included.
ANALYTICS_DEFAULT_DAYS = 30
# Shortest useful search text: one letter matches nearly every message.
SEARCH_MIN_CHARS = 2


# Dates the filters take: a day is widened to the next midnight and the default range reaches 29 days back, so
# dates at the ends of Python's calendar (9999-12-31, 0001-01-05) overflowed into a 500. Nothing in a chat
# history is older than this or later than that.
DATE_EARLIEST = date(1900, 1, 1)
DATE_LATEST = date(9998, 12, 31)


class _DateField(forms.DateField):
    def clean(self, value):
        day = super().clean(value)
        if day is not None and not DATE_EARLIEST <= day <= DATE_LATEST:
            raise forms.ValidationError(_("Choose a date between %(first)s and %(last)s."),
                                        params={"first": DATE_EARLIEST.isoformat(), "last": DATE_LATEST.isoformat()})
        return day


class _BotField(forms.CharField):
    def clean(self, value):
        name = super().clean(value)
        if not name:
            return None
        bot = Bot.objects.filter(name=name).first()
        if bot is None:
            raise forms.ValidationError(_("No bot named %(name)s in this tenant."), params={"name": name})
        return bot


class ConversationFilterForm(forms.Form):
    bot = _BotField(required=False, max_length=63)
    channel = forms.CharField(required=False, max_length=20)
    date_from = _DateField(required=False, label=_("From"))
    date_to = _DateField(required=False, label=_("To"))
    tools = forms.BooleanField(required=False, label=_("With tool calls"))
    unanswered = forms.BooleanField(required=False, label=_("Unanswered"))
    q = forms.CharField(required=False, max_length=SEARCH_MAX_CHARS, strip=True, label=_("Text"))
    cursor = forms.CharField(required=False, max_length=200)

    def clean_q(self) -> str:
        text = self.cleaned_data.get("q") or ""
        if text and len(text) < SEARCH_MIN_CHARS:
            raise forms.ValidationError(_("Search for at least %(n)d characters."), params={"n": SEARCH_MIN_CHARS})
        return text

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and end < start:
            raise forms.ValidationError(_("The end date is before the start date."))
        return data

    def filters(self) -> ConversationFilters:
        data = self.cleaned_data
        return ConversationFilters(bot=data.get("bot"), channel=data.get("channel") or "",
                                   date_from=data.get("date_from"), date_to=data.get("date_to"),
                                   tools=bool(data.get("tools")), unanswered=bool(data.get("unanswered")),
                                   text=data.get("q") or "")


class AnalyticsRangeForm(forms.Form):
    date_from = _DateField(required=False, label=_("From"))
    date_to = _DateField(required=False, label=_("To"))
    bot = _BotField(required=False, max_length=63)
    channel = forms.CharField(required=False, max_length=20)

    def clean(self):
        data = super().clean()
        end = data.get("date_to") or analytics_today()
        start = data.get("date_from") or end - timedelta(days=ANALYTICS_DEFAULT_DAYS - 1)
        if end < start:
            raise forms.ValidationError(_("The end date is before the start date."))
        if (end - start).days + 1 > ANALYTICS_MAX_DAYS:
            raise forms.ValidationError(_("Choose a range of at most %(n)d days."), params={"n": ANALYTICS_MAX_DAYS})
        data["date_from"], data["date_to"] = start, end
        return data

    def filters(self) -> AnalyticsFilters:
        data = self.cleaned_data
        return AnalyticsFilters(day_from=data["date_from"], day_to=data["date_to"], bot=data.get("bot"),
                                channel=data.get("channel") or "")


def default_range() -> tuple[date, date]:
    end = analytics_today()
    return end - timedelta(days=ANALYTICS_DEFAULT_DAYS - 1), end
