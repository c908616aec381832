"""Every console page: declares its role, renders for that role and not below it, and shows an empty state
that says what to do next on a tenant with nothing in it."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from apps.accounts.roles import Role, role_allows

pytestmark = pytest.mark.django_db

BOT = "{bot}"
# (path, role needed to read it, a text of its empty state on the canary bot of tenant A)
PAGES = [
    ("/console/", Role.VIEWER, "Console"),
    ("/console/bots/", Role.VIEWER, "All bots"),
    (f"/console/bots/{BOT}/", Role.VIEWER, "This bot has no scripts."),
    (f"/console/bots/{BOT}/config/", Role.VIEWER, "No settings in effect."),
    (f"/console/bots/{BOT}/memory/", Role.VIEWER, "No bot memory yet."),
    ("/console/kb/", Role.VIEWER, "Search playground"),
    (f"/console/kb/{BOT}/", Role.VIEWER, "This bot has no knowledge base."),
    (f"/console/kb/{BOT}/progress/", Role.VIEWER, "kb-progress"),
    (f"/console/kb/{BOT}/search/", Role.VIEWER, "This bot has no knowledge base to search."),
    ("/console/schedules/", Role.VIEWER, "Schedules"),
    (f"/console/schedules/{BOT}/", Role.VIEWER, "This bot has no schedules."),
    ("/console/meetings/", Role.VIEWER, "No meeting rooms."),
    ("/console/email/", Role.VIEWER, "Mails sent"),
    (f"/console/email/{BOT}/", Role.VIEWER, "No mail in this log."),
    ("/console/drive/", Role.VIEWER, "Nothing here."),
    ("/console/compliance/", Role.ADMIN, "Audit log"),
    ("/console/compliance/requests/", Role.ADMIN, "No data-subject requests."),
    ("/console/compliance/retention/", Role.ADMIN, "forever"),
    ("/console/api-keys/", Role.ADMIN, "No API keys."),
    ("/console/users/", Role.ADMIN, "Users and roles"),
]


def _console_views():
    def walk(patterns, prefix=""):
        for item in patterns:
            if isinstance(item, URLResolver):
                yield from walk(item.url_patterns, prefix + str(item.pattern))
            elif isinstance(item, URLPattern):
                yield prefix + str(item.pattern), item.callback

    return [(route, view) for route, view in walk(get_resolver().url_patterns)
            if route.startswith("console/") and view.__module__.startswith("apps.console")]


def test_every_console_view_declares_its_role():
    views = _console_views()
    assert len(views) >= 25
    missing = [route for route, view in views if getattr(view, "required_role", None) is None]
    assert missing == []


@pytest.mark.parametrize(("path", "needed", "text"), PAGES)
@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.ADMIN])
def test_page_renders_for_its_role_only(console_client, canary_tenants, local_storage, path, needed, text, role):
    response = console_client(role).get(path.replace(BOT, canary_tenants.a.canary))
    if role_allows(role, needed):
        assert response.status_code == 200, path
        assert text in response.content.decode(), path
    else:
        assert response.status_code == 403, path


def test_pages_answer_the_sign_in_redirect_to_anonymous_visitors(canary_tenants):
    from django.test import Client

    client = Client(HTTP_HOST=canary_tenants.a.host)
    for path, _needed, _text in PAGES:
        response = client.get(path.replace(BOT, canary_tenants.a.canary))
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path


def test_pages_carry_no_inline_script_or_style(console_client, canary_tenants, local_storage):
    client = console_client(Role.ADMIN)
    for path, _needed, _text in PAGES:
        html = client.get(path.replace(BOT, canary_tenants.a.canary)).content.decode()
        assert "<script>" not in html and " style=" not in html and "<style" not in html, path
        assert " onclick=" not in html and "hx-on" not in html, path


def test_pages_and_downloads_are_not_kept_by_browsers_or_proxies(console_client, canary_tenants, local_storage):
    """Transcripts, bot memory and (for editors) credentials: the Back button of a shared machine must not show
    them after sign-out. Views that say nothing get `no-store`; the chat API's answers too."""
    from django.test import Client

    client = console_client(Role.ADMIN)
    paths = [path.replace(BOT, canary_tenants.a.canary) for path, _needed, _text in PAGES]
    for path in [*paths, "/console/conversations/", "/console/analytics/", "/console/analytics/data.json",
                 "/console/conversations/export.csv"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "no-store" in response.get("Cache-Control", ""), path
    assert "no-store" in Client(HTTP_HOST=canary_tenants.a.host).get("/api/bots").get("Cache-Control", "")


# Filters a user can type on any page: dates at the edge of the calendar, NUL characters, huge numbers.
HOSTILE_QUERIES = ["q=%00", "since=9999-12-31&until=9999-12-31", "actor=%00&text=%00", "page=%00",
                   "day_from=0001-01-01&day_to=9999-12-31", "page=99999999999999999999999", "key=%00", "prefix=%00"]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_filters_get_an_answer_never_an_internal_error(console_client, canary_tenants, local_storage, query):
    client = console_client(Role.ADMIN)
    for path, _needed, _text in PAGES:
        response = client.get(path.replace(BOT, canary_tenants.a.canary) + "?" + query)
        assert response.status_code in (200, 400), (path, query, response.status_code)
    assert client.get("/console/compliance/export.csv?" + query).status_code in (200, 400)


def test_nul_in_a_path_or_a_form_is_refused_with_400(console_client, canary_tenants):
    client = console_client(Role.ADMIN)
    answer = client.get("/console/bots/%00/")
    assert answer.status_code == 400 and "NUL" in answer.content.decode()
    assert client.post("/console/api-keys/create/", {"name": "a\x00b", "confirmed": "yes"}).status_code == 400
    until = client.get("/console/compliance/?until=9999-12-31")
    assert until.status_code == 400 and "past the last date" in until.content.decode()
