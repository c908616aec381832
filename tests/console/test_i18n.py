"""The console in Brazilian Portuguese: chosen with Django's set_language (POST with CSRF) or the browser's
Accept-Language, and every navigation label and page title comes out translated."""

from __future__ import annotations

import pytest

from apps.accounts.roles import Role

pytestmark = pytest.mark.django_db

PORTUGUESE_NAV = ["Conhecimento", "Conversas", "Análises", "Agendamentos", "Reuniões", "Conformidade",
                  "Chaves de API", "Usuários e papéis"]


def test_language_switch_renders_the_console_in_portuguese(console_client, canary_tenants):
    client = console_client(Role.ADMIN)
    assert "Knowledge" in client.get("/console/").content.decode()
    switched = client.post("/console/i18n/setlang/", {"language": "pt-br", "next": "/console/bots/"})
    assert switched.status_code == 302 and switched["Location"] == "/console/bots/"
    html = client.get("/console/bots/").content.decode()
    assert '<html lang="pt-br">' in html
    for label in PORTUGUESE_NAV:
        assert label in html
    assert "Publicar um pacote" in html and "Todos os bots" in html
    assert "Knowledge" not in html
    empty = client.get(f"/console/bots/{canary_tenants.a.canary}/memory/").content.decode()
    assert "Nenhuma memória do bot ainda." in empty and "O que fazer agora:" in empty


def test_accept_language_selects_portuguese_and_english_stays_the_default(console_client):
    client = console_client(Role.VIEWER)
    english = client.get("/console/kb/").content.decode()
    assert "Search playground" in english and "Teste de busca" not in english
    html = client.get("/console/kb/", HTTP_ACCEPT_LANGUAGE="pt-BR,pt;q=0.9").content.decode()
    assert "Conhecimento" in html and "Teste de busca" in html and "Search playground" not in html


def test_config_errors_are_labelled_in_portuguese(console_client, canary_tenants, local_storage):
    client = console_client(Role.EDITOR)
    client.post("/console/i18n/setlang/", {"language": "pt-br", "next": "/console/"})
    answer = client.post(f"/console/bots/{canary_tenants.a.canary}/config/save/", {"text": "no comma here\n",
                                                                                   "confirmed": "yes"})
    html = answer.content.decode()
    assert answer.status_code == 400
    assert "O config.csv tem 1 problema; nada foi salvo." in html and "Linha 1" in html
