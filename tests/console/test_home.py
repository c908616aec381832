"""The console's layout and home page: navigation to every section, the language switch, role checks."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.accounts.roles import Role

pytestmark = pytest.mark.django_db

NAV_PATHS = ["/console/bots/", "/console/kb/", "/console/conversations/", "/console/analytics/",
             "/console/schedules/", "/console/meetings/", "/console/email/", "/console/compliance/",
             "/console/api-keys/", "/console/users/", "/console/drive/"]


def test_home_shows_every_section_and_the_language_switch(console_client):
    page = console_client(Role.VIEWER).get("/console/")
    html = page.content.decode()
    assert page.status_code == 200
    for path in NAV_PATHS:
        assert f'href="{path}"' in html
    assert 'action="/console/i18n/setlang/"' in html and 'value="pt-br"' in html


def test_home_needs_a_console_role(console_client, canary_tenants):
    assert Client(HTTP_HOST=canary_tenants.a.host).get("/console/").status_code == 302
    assert console_client(None).get("/console/").status_code == 403
