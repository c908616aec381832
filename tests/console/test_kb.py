"""Knowledge pages: documents with status and progress, the polled progress fragment (stops polling when
done), retry of a failed document, the search playground's scores and sources, tenant isolation."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.bots.models import Bot
from apps.compliance.models import AuditEvent
from apps.kb.models import Chunk, Document, KnowledgeBase

pytestmark = pytest.mark.django_db


def _documents(tenant, statuses: dict[str, str]) -> dict[str, int]:
    """Documents of the canary bot in KB `manual`, named by `statuses` keys; returns their ids."""
    with schema_context(tenant.schema_name):
        bot = Bot.objects.get(name=tenant.canary)
        kb, _ = KnowledgeBase.objects.get_or_create(bot=bot, name="manual")
        ids = {}
        for name, status in statuses.items():
            document = Document.objects.create(
                kb=kb, path=f"{bot.name}.gbai/{bot.name}.gbkb/manual/{name}", etag=f"etag-{name}", size=100,
                status=status, error="extraction failed: the PDF is encrypted" if status == "failed" else "",
                chunks_done=3 if status == "pending" else 0, chunks_total=10 if status == "pending" else 0)
            ids[name] = document.pk
        return ids


def test_documents_show_status_progress_and_failure_reason(console_client, canary_tenants):
    _documents(canary_tenants.a, {"a.txt": "indexed", "b.txt": "pending", "c.pdf": "failed"})
    html = console_client(Role.EDITOR).get(f"/console/kb/{canary_tenants.a.canary}/").content.decode()
    assert "the PDF is encrypted" in html and "Retry" in html
    assert 'max="10" value="3"' in html  # b.txt's chunk progress
    assert "hx-trigger=\"every 1s\"" in html  # polling while a document is pending
    assert html.count('id="kb-overview"') == 1
    viewer = console_client(Role.VIEWER).get(f"/console/kb/{canary_tenants.a.canary}/").content.decode()
    assert "the PDF is encrypted" in viewer and "Retry" not in viewer


def test_progress_fragment_updates_rows_and_stops_polling_when_all_are_done(console_client, canary_tenants):
    ids = _documents(canary_tenants.a, {"a.txt": "indexed", "b.txt": "pending"})
    client = console_client(Role.VIEWER)
    url = f"/console/kb/{canary_tenants.a.canary}/progress/?ids={ids['b.txt']}"
    polling = client.get(url).content.decode()
    assert 'data-percent="50"' in polling and "every 1s" in polling
    assert f'id="doc-{ids["b.txt"]}" hx-swap-oob="true"' in polling
    with schema_context(canary_tenants.a.schema_name):
        Document.objects.filter(pk=ids["b.txt"]).update(status="indexed", chunks_done=10)
    done = client.get(url).content.decode()
    assert 'data-percent="100"' in done and 'data-done="true"' in done
    assert '<div id="kb-overview" hx-swap-oob="true">' in done  # the per-KB counts follow
    assert "every 1s" not in done and "indexing finished" in done


def test_progress_fragment_never_stops_above_a_row_it_shows_pending(console_client, canary_tenants, monkeypatch):
    """The indexer finishes the last document while the fragment reads: the bar at 100 % (polling ends)
    must come with the row's final status, or the row says "waiting for the indexer" forever (a browser test
    caught it under load)."""
    from apps.console import selectors
    from apps.console.views import kb as kb_views

    ids = _documents(canary_tenants.a, {"a.txt": "indexed", "b.txt": "pending"})
    real = selectors.indexing_progress

    def indexer_finishes_meanwhile(*, bot):
        Document.objects.filter(pk=ids["b.txt"]).update(status="indexed", chunks_done=10)
        return real(bot=bot)

    monkeypatch.setattr(kb_views, "indexing_progress", indexer_finishes_meanwhile)
    html = console_client(Role.VIEWER).get(f"/console/kb/{canary_tenants.a.canary}/progress/?ids={ids['b.txt']}")
    html = html.content.decode()
    assert 'data-done="true"' in html
    row = html[html.index(f'id="doc-{ids["b.txt"]}"'):]
    assert "status-indexed" in row[:400] and "waiting for the indexer" not in row


def test_progress_fragment_polls_while_a_followed_row_is_pending(console_client, canary_tenants, monkeypatch):
    """A row back to pending after the bar was read (a retry, a redeploy) keeps the fragment polling."""
    from apps.console import selectors
    from apps.console.views import kb as kb_views

    ids = _documents(canary_tenants.a, {"a.txt": "indexed", "b.txt": "indexed"})
    real = selectors.indexing_progress

    def retried_meanwhile(*, bot):
        progress = real(bot=bot)
        Document.objects.filter(pk=ids["b.txt"]).update(status="pending")
        return progress

    monkeypatch.setattr(kb_views, "indexing_progress", retried_meanwhile)
    html = console_client(Role.VIEWER).get(f"/console/kb/{canary_tenants.a.canary}/progress/?ids={ids['b.txt']}")
    assert "every 1s" in html.content.decode()


def test_progress_ignores_ids_that_are_not_plain_numbers(console_client, canary_tenants):
    ids = _documents(canary_tenants.a, {"d.txt": "pending"})
    odd = ",".join(["²", "9" * 30, "-1", str(ids["d.txt"])])  # isdigit() took the first two; int() or the DB refused
    html = console_client(Role.VIEWER).get(f"/console/kb/{canary_tenants.a.canary}/progress/?ids={odd}")
    assert html.status_code == 200 and "every 1s" in html.content.decode()


def test_retry_requeues_a_failed_document_after_confirmation(console_client, canary_tenants):
    ids = _documents(canary_tenants.a, {"c.pdf": "failed"})
    client = console_client(Role.EDITOR)
    url = f"/console/kb/{canary_tenants.a.canary}/documents/{ids['c.pdf']}/retry/"
    asked = client.post(url)
    assert asked.status_code == 200 and "Index" in asked.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert Document.objects.get(pk=ids["c.pdf"]).status == "failed"
    done = client.post(url, {"confirmed": "yes"})
    assert done.status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        document = Document.objects.get(pk=ids["c.pdf"])
        assert (document.status, document.error) == ("pending", "")
        assert AuditEvent.objects.filter(action="kb.document_retry", object_id=document.path).count() == 1


def test_viewer_cannot_retry(console_client, canary_tenants):
    ids = _documents(canary_tenants.a, {"c.pdf": "failed"})
    url = f"/console/kb/{canary_tenants.a.canary}/documents/{ids['c.pdf']}/retry/"
    assert console_client(Role.VIEWER).post(url, {"confirmed": "yes"}).status_code == 403
    with schema_context(canary_tenants.a.schema_name):
        assert Document.objects.get(pk=ids["c.pdf"]).status == "failed"


def test_another_tenants_document_is_not_found_on_this_host(console_client, canary_tenants):
    """The canary bots share a primary key and name scheme; a document id of tenant B on A's host is a 404."""
    ids_b = _documents(canary_tenants.b, {"secret.pdf": "failed"})
    _documents(canary_tenants.a, {"mine.txt": "failed"})
    client = console_client(Role.ADMIN)
    url = f"/console/kb/{canary_tenants.a.canary}/documents/{ids_b['secret.pdf']}/retry/"
    with schema_context(canary_tenants.a.schema_name):
        assert not Document.objects.filter(pk=ids_b["secret.pdf"]).exists()
    assert client.post(url, {"confirmed": "yes"}).status_code == 404
    fragment = client.get(f"/console/kb/{canary_tenants.a.canary}/progress/?ids={ids_b['secret.pdf']}")
    assert "secret.pdf" not in fragment.content.decode()
    with schema_context(canary_tenants.b.schema_name):
        assert Document.objects.get(pk=ids_b["secret.pdf"]).status == "failed"


def test_search_playground_shows_lexical_scores_ranks_and_sources(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(name=canary_tenants.a.canary)
        kb = KnowledgeBase.objects.create(bot=bot, name="manual")
        for i, text in enumerate(["Returns are accepted within 30 days with the receipt.",
                                  "Our shop opens at nine in the morning."]):
            document = Document.objects.create(kb=kb, path=f"{bot.name}.gbai/{bot.name}.gbkb/manual/d{i}.txt",
                                               etag=str(i), status="indexed")
            Chunk.objects.create(document=document, kb=kb, bot=bot, index=0, text=text, heading=f"Heading {i}")
    html = console_client(Role.VIEWER).get(
        f"/console/kb/{canary_tenants.a.canary}/search/?q=returns+receipt&mode=lexical").content.decode()
    assert "manual/d0.txt" in html and "manual/d1.txt" not in html
    assert "Returns are accepted" in html and "Heading 0" in html
    assert "Lexical score" in html and "Dense rank" in html
    assert 'class="hit-row"' in html


def test_search_playground_refuses_an_oversized_question(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        KnowledgeBase.objects.create(bot=Bot.objects.get(name=canary_tenants.a.canary), name="manual")
    response = console_client(Role.VIEWER).get(f"/console/kb/{canary_tenants.a.canary}/search/?q={'x' * 2001}")
    assert response.status_code == 400 and "the limit is 2000" in response.content.decode()
