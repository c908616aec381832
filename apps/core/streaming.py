"""Downloads streamed from a tenant's tables one chunk of rows at a time (the console's CSV and JSON exports).

Failure modes prevented:
- A "streamed" body built whole before its first byte is sent. Django hands a StreamingHttpResponse's
  iterator to the server as it is, and each server consumes the other kind whole: under ASGI (daphne) a
  synchronous iterator in one `sync_to_async(list)`, under WSGI an asynchronous one in one `async_to_sync`.
  On a large tenant that is the whole export in memory and a client timing out before the first byte.
  `tenant_streaming_response` gives each server the kind it streams: under ASGI an asynchronous iterator
  that advances the export by one chunk per `sync_to_async` call (thread-sensitive: the request's own
  database thread and connection), under WSGI the plain generator.
- Reading the wrong tenant while streaming: the body is produced after the view returned, outside the
  tenant middleware's activation of the request's schema. Under daphne a request's sync work has a thread of
  its own whose connection stays on that schema, but a chunk run on a thread shared with other requests (the
  caller's thread under `async_to_sync`, as in the tests) finds the connection on whatever schema another
  request's middleware switched it to meanwhile. Each chunk is read inside `schema_context(<the request's
  schema>)`, entered and left around that chunk only, so no chunk depends on the thread's state.
- Unbounded memory: an export reads its rows in keyset chunks (`tenant_chunks`) and holds one at a time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django_tenants.utils import schema_context

S = TypeVar("S")
_DONE = object()


def tenant_chunks(schema: str, fetch: Callable[[S | None], tuple[str, S | None]]) -> Iterator[str]:
    """The text of each chunk of an export: `fetch(state) -> (text, next state, or None after the last chunk)`,
    first called with None; each call (its queries and the formatting of its rows) made inside `schema`."""
    state: S | None = None
    while True:
        with schema_context(schema):
            text, state = fetch(state)
        if text:
            yield text
        if state is None:
            return


class CsvLines:
    """CSV text one row at a time (`csv.writer`'s dialect, CRLF line ends), for exports built line by line."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)

    def line(self, values: list | tuple) -> str:
        self.writer.writerow(values)
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def _next_or_done(parts: Iterator[str]) -> object:
    return next(parts, _DONE)


async def _one_part_per_call(parts: Iterator[str]) -> AsyncIterator[str]:
    """`parts` advanced by one item per thread-sensitive `sync_to_async` call, never read ahead. Nothing is held
    between two items (`tenant_chunks` leaves the schema context before it yields), so a client that goes away
    mid-stream leaves only a suspended generator to the garbage collector."""
    step = sync_to_async(_next_or_done, thread_sensitive=True)
    while (part := await step(parts)) is not _DONE:
        yield part


def tenant_streaming_response(request: HttpRequest, parts: Iterator[str], *,
                              content_type: str) -> StreamingHttpResponse:
    """A response streaming `parts` (each one chunk of the export, read when it is to be sent) under ASGI and
    WSGI alike. `parts` reads the database through `tenant_chunks` in the request's schema."""
    body = _one_part_per_call(parts) if isinstance(request, ASGIRequest) else parts
    return StreamingHttpResponse(body, content_type=content_type)
