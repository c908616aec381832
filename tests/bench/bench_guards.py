"""The time (and memory) the platform's guards take on the hostile inputs of the tests: `python -m
tests.bench.bench_guards` (also `make bench`). The tests check what bounds the work (pages read, style
look-ups, parser calls, reads carrying their limit, a standing subscription); the figures are printed here.

Knowledge base: a PDF that expands to 77 M characters (tests/kb/test_extract.py), a DOCX of 30,000 paragraphs and
one with a 400-row merged cell, Markdown lines of 200,000 spaces. Mail: a mail nested 900 levels deep
(tests/mail/test_content.py), and SEND MAIL of a 200 MB drive file, refused from its size (time and memory peak;
tests/mail/test_services.py). Chat: stripping 30,000 unclosed `<think` tags (tests/sessions/test_rendering.py),
and the first event of a socket opening in a quiet process, with and without the standing channel-layer
subscription (tests/sessions/test_consumers.py), on a private redis-server. Needs no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Quiet periods after the last socket closed: the idle reader of channels-redis sleeps in 0.1 s steps, and
# waits within one step put the next socket's first event at several points of it.
QUIET_S = (0.105, 0.12, 0.14)


def _seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_kb() -> None:
    from apps.kb.extract import extract
    from tests.kb.test_extract import _with_body, build_docx, shared_stream_pdf

    bomb = shared_stream_pdf(pages=1000, lines=2500)
    print(f"PDF of {len(bomb) // 1024} KB expanding to 77 M characters, read to the text budget: "
          f"{_seconds(lambda: extract('bomb.pdf', bomb)):.2f} s  goal < 30 s (84 s reading it all)")
    paragraph = b"<w:p><w:r><w:t>Tents pack small.</w:t></w:r></w:p>"
    heading = b'<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Care</w:t></w:r></w:p>'
    long_docx = _with_body(build_docx(lambda document: document.add_heading("Returns", level=1)),
                           paragraph * 15_000 + heading + paragraph * 15_000)
    print(f"DOCX of 30,000 paragraphs: {_seconds(lambda: extract('long.docx', long_docx)):.2f} s  goal < 5 s "
          "(37 s with python-docx's style look-ups)")

    def merged(document) -> None:
        table = document.add_table(rows=400, cols=5)
        for column in range(5):
            table.cell(0, column).merge(table.cell(399, column)).text = f"Column {column}"

    merged_docx = build_docx(merged)
    print(f"DOCX table with 400-row merged cells: {_seconds(lambda: extract('merged.docx', merged_docx)):.2f} s  "
          "goal < 5 s (41 s walking up the rows)")
    worst = max(_seconds(lambda prefix=prefix: extract("spaces.md", b"before\n" + prefix + b" " * 200_000 +
                                                       b"x\nafter\n"))
                for prefix in (b"", b"--", b"| -- |"))
    print(f"Markdown line of 200,000 spaces ending in a letter (slowest of 3): {worst * 1000:.1f} ms  goal < 5 s "
          "(minutes with the old table-ruler pattern)")


def bench_mail() -> None:
    from apps.bots.models import Bot
    from apps.drive.backends import LocalDrive
    from apps.mail import services
    from apps.mail.content import MessageTooComplex, message_parse
    from tests.mail.test_content import nested_raw

    deep = nested_raw(900, lines=300_000)
    started = time.perf_counter()
    with contextlib.suppress(MessageTooComplex):
        message_parse(deep)
    print(f"mail of {len(deep) / 1e6:.1f} MB nested 900 levels, refused: "
          f"{(time.perf_counter() - started) * 1000:.1f} ms  goal < 2 s (about 25 s for the parser)")

    bot = Bot(name="bench")
    with tempfile.TemporaryDirectory() as folder:
        drive = LocalDrive(Path(folder))
        drive.write(services.bot_drive_root(bot) + "notes.txt", b"x" * 1000)
        drive.write(services.bot_drive_root(bot) + "standup.webm", b"\0")
        size = 200 * 1024 * 1024
        os.truncate(Path(folder) / (services.bot_drive_root(bot) + "standup.webm"), size)  # sparse: no disk
        real_drive = services.tenant_drive
        services.tenant_drive = lambda: drive
        tracemalloc.start()
        started = time.perf_counter()
        try:
            services._attachments_read(bot, ["notes.txt", "standup.webm"])
        except services.MailError:
            pass
        finally:
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            services.tenant_drive = real_drive
    print(f"SEND MAIL with a {size // (1024 * 1024)} MB drive file attached, refused: {elapsed * 1000:.2f} ms, "
          f"memory peak {peak / 1024:.0f} KB  goal < 20 MB")


async def _first_event_delays(layer, standing: bool) -> list[float]:
    from apps.sessions.consumers import _layer_keep_listening
    from tests.sessions.support import socket_closed

    if standing:
        await _layer_keep_listening(layer)
    group, delays = "bench.quiet-process", []
    for quiet_s in QUIET_S:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await socket_closed(layer, group, channel)
        await asyncio.sleep(quiet_s)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        started = time.perf_counter()
        await layer.group_send(group, {"type": "chat.events", "events": []})
        await asyncio.wait_for(layer.receive(channel), 5.0)
        delays.append(time.perf_counter() - started)
        await socket_closed(layer, group, channel)
    await layer.flush()
    return delays


def bench_chat() -> None:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from apps.sessions.rendering import strip_think

    payload = "<think " * 30_000
    print(f"strip_think of 30,000 unclosed <think tags (210 KB): {_seconds(lambda: strip_think(payload)) * 1000:.2f} ms"
          "  goal < 0.5 s (about 6 s when each scanned to the end)")
    for standing in (False, True):
        layer = RedisPubSubChannelLayer(hosts=[os.environ["REDIS_URL"]])
        delays = asyncio.run(_first_event_delays(layer, standing))
        shown = ", ".join(f"{d * 1000:.1f}" for d in delays)
        print(f"first event of a socket in a quiet process, {'with' if standing else 'without'} the standing "
              f"subscription: {shown} ms{'  goal < 30 ms' if standing else ''}")


def main() -> int:
    from gbplatform import localservices

    redis = localservices.redis_start(ROOT / "var" / "bench-guards-redis", persist=False)
    os.environ.update(REDIS_URL=redis.url, DJANGO_SETTINGS_MODULE="gbplatform.settings.base",
                      DATABASE_URL="postgres://bench@127.0.0.1:9/unused", LOG_LEVEL="WARNING",
                      SECRET_KEY="bench-only-key")
    try:
        import django

        django.setup()
        bench_kb()
        bench_mail()
        bench_chat()
    finally:
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
