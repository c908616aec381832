"""Template filters of the conversations pages: bot messages through the chat's one safe Markdown renderer."""

from django import template
from django.utils.safestring import SafeString, mark_safe

from apps.sessions.rendering import render_markdown

register = template.Library()


@register.filter
def safe_markdown(text: str) -> SafeString:
    """Markdown rendered with raw HTML escaped and the output sanitised (apps.sessions.rendering)."""
    return mark_safe(render_markdown(str(text or "")))  # noqa: S308 - sanitised by render_markdown


@register.filter
def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


@register.filter
def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"
