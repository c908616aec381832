"""A small Qdrant REST server of our own, on loopback, for tests.

It speaks the part of Qdrant's HTTP API that `apps.kb.vectorstores.QdrantStore` (and the health check) use,
with Qdrant's JSON envelope, status codes and error shapes, so the real `qdrant_client.QdrantClient(url=...,
api_key=...)` is exercised over a socket, exactly as the platform builds it in production:

* `GET /` (version), `GET /healthz` (no key needed, as in Qdrant);
* `GET /collections`, `GET /collections/{name}` (with the payload indexes created and the HNSW parameters
  asked for), `GET /collections/{name}/exists`, `PUT /collections/{name}` (409 when it exists),
  `DELETE /collections/{name}`;
* `PUT /collections/{name}/index` (payload index: recorded, see `payload_indexes`);
* `PUT /collections/{name}/points` (upsert), `POST /collections/{name}/points` (retrieve by ids),
  `POST /collections/{name}/points/delete` (by ids or by filter), `/points/query`, `/points/search`,
  `/points/count`, `/points/scroll`.

Request bodies are parsed with qdrant-client's own REST models (`qdrant_client.http.models`, which forbid
unknown fields like Qdrant's serde structs): a body that does not parse is a 400 `Format error in JSON body`,
a vector of the wrong size a 400 `Vector dimension error`, a point id that is neither an unsigned integer nor
a UUID a 400, a call on a collection that does not exist a 404 `Collection ... doesn't exist!`. Answers are
Qdrant's envelope `{"result": ..., "status": "ok", "time": ...}`, errors `{"status": {"error": "..."}, "time":
...}`. With `api_key` set, a request without the key (`api-key` header or `Authorization: Bearer`) gets
Qdrant's plain-text 401. A body larger than `max_request_bytes` (Qdrant's default `max_request_size_mb`,
32 MiB) gets the 400 Qdrant's JSON extractor answers.

Storage, filtering and scoring are delegated to an in-process `QdrantClient(":memory:")` owned by the fake
(an implementation detail: nothing outside this module touches it). What that local mode ignores is kept
here instead: `payload_indexes` (collection -> field -> the schema sent, e.g. `KeywordIndexParams(is_tenant=
True)`) and `queries` (every query and search: collection, filter, `SearchParams` with `hnsw_ef`, limit).

Switches simulate failures, as the Vault fake's do: `outage_status` (every request answers it),
`fail_next` (the next requests answer these statuses, one each), `hang_s` (every request is recorded, then
held this long before it is answered, as a hung Qdrant holds it; `stop()` lets held requests go), `on_request`
(called with each recorded
request before it is answered, e.g. to create a collection "by another worker" between two calls).
Every request is recorded in `requests` (method, path, query, headers, JSON body, its size, the status answered);
`count(method, path)` counts them. `collection_create` and `collection_drop` change the server's state
directly, as an operator or another process would.

Pytest fixtures (import them into a conftest: `from tests.support.qdrant_fake import qdrant_platform,
qdrant_server`):

* `qdrant_server` -- a started `FakeQdrant` with an API key, stopped after the test;
* `qdrant_platform` -- the same, made the platform's vector store (`QDRANT_URL`, `QDRANT_API_KEY`), with the
  stores the platform caches per server dropped before and after. It sets settings through pytest-django's
  `settings`: list it after `local_storage` (which empties `QDRANT_URL`).

Outside pytest fixtures (e.g. a probe), `qdrant_platform_running()` does the same in a `with` block.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models

from tests.support.loopback_http import LoopbackServer

# Qdrant's default `service.max_request_size_mb`.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Paths Qdrant answers without an API key.
OPEN_PATHS = frozenset({"/", "/healthz", "/livez", "/readyz"})
MISSING_KEY = "Must provide an API key or an Authorization bearer token"
WRONG_KEY = "Invalid API key or JWT"

_POINT_INSERT = TypeAdapter(models.PointInsertOperations)
_POINTS_SELECTOR = TypeAdapter(models.PointsSelector)


def _server_version() -> str:
    """The version `GET /` reports: the client's major.minor, so the client's compatibility check is quiet."""
    major, minor = importlib.metadata.version("qdrant-client").split(".")[:2]
    return f"{major}.{minor}.0"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the JSON body (None when there was none, or when it was refused unread or unparsed)
    size: int  # the body's length in bytes
    status: int = 0  # what the fake answered (0 while it is being answered)


@dataclass(frozen=True)
class RecordedQuery:
    """One nearest-neighbour query or search as Qdrant received it."""

    collection: str
    filter: models.Filter | None
    params: models.SearchParams | None
    limit: int

    @property
    def hnsw_ef(self) -> int | None:
        return self.params.hnsw_ef if self.params is not None else None


class QdrantError(Exception):
    """An error answer: `status` and Qdrant's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found(name: str) -> QdrantError:
    return QdrantError(404, f"Not found: Collection `{name}` doesn't exist!")


def _parse(model: Any, body: Any) -> Any:
    """`body` as a REST model (a pydantic class or a TypeAdapter); a 400 like Qdrant's when it does not fit."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(body)
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise QdrantError(400, f"Format error in JSON body: {where}: {first['msg']}") from None


def _check_point_id(point_id: Any) -> None:
    if isinstance(point_id, int):
        if point_id < 0:
            raise QdrantError(400, f"Format error in JSON body: invalid point id {point_id}")
        return
    try:
        uuid.UUID(str(point_id))
    except ValueError:
        raise QdrantError(400, f"Format error in JSON body: Unable to parse UUID: {point_id}") from None


class FakeQdrant:
    def __init__(self, *, api_key: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.outage_status: int | None = None
        self.fail_next: list[int] = []
        self.hang_s: float = 0.0
        self._stopping = threading.Event()
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self.requests: list[RecordedRequest] = []
        self.queries: list[RecordedQuery] = []
        self.payload_indexes: dict[str, dict[str, Any]] = {}
        self.created_with: dict[str, models.CreateCollection] = {}
        self._sizes: dict[str, int] = {}
        self._store = QdrantClient(":memory:")
        self._lock = threading.RLock()
        self._operation_id = 0
        self._http = LoopbackServer(self._handle, methods=("GET", "POST", "PUT", "PATCH", "DELETE"),
                                    name="fake-qdrant")

    # --- setup and inspection ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._http.url

    def client(self, **kwargs: Any) -> QdrantClient:
        """A real client of this server (with its key), for a test's own inspection over HTTP."""
        return QdrantClient(url=self.url, api_key=self.api_key, check_compatibility=False, **kwargs)

    def collection_create(self, name: str, size: int) -> None:
        """Create a cosine collection directly, as another worker or an operator would."""
        with self._lock:
            self._create(name, models.CreateCollection(
                vectors=models.VectorParams(size=size, distance=models.Distance.COSINE)))

    def collection_drop(self, name: str) -> None:
        """Delete a collection directly, as an operator would (or a Qdrant restored from an older snapshot)."""
        with self._lock:
            self._drop(name)

    def collection_names(self) -> list[str]:
        with self._lock:
            return sorted(self._sizes)

    def payload_index(self, collection: str, field_name: str) -> Any:
        """The schema the payload index of `field_name` was created with (None when there is none)."""
        with self._lock:
            return self.payload_indexes.get(collection, {}).get(field_name)

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.path == path)

    def statuses(self, method: str, path: str) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests if r.method == method and r.path == path]

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeQdrant:
        self._http.start(port)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.stop()
        self._store.close()

    def __enter__(self) -> FakeQdrant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP --------------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        started = time.monotonic()
        split = urlsplit(handler.path)
        path, query = split.path, dict(parse_qsl(split.query))
        length = int(handler.headers.get("Content-Length") or 0)
        if length > self.max_request_bytes:
            _drain(handler, length)
            message = f"JSON payload ({length} bytes) is larger than allowed (limit: {self.max_request_bytes} bytes)."
            record = self._record(method, path, query, handler, None, length)
            return self._answer(handler, record, 400, {"status": {"error": message}, "time": 0.0})
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            record = self._record(method, path, query, handler, None, length)
            return self._answer(handler, record, 400, _error_body(f"Format error in JSON body: {exc}", started))
        record = self._record(method, path, query, handler, body, length)
        if self.on_request is not None:
            self.on_request(record)
        if self.hang_s:
            self._stopping.wait(self.hang_s)
        with self._lock:
            forced = self.fail_next.pop(0) if self.fail_next else None
        status = forced or self.outage_status
        if status is not None:
            return self._answer(handler, record, status, _error_body(f"scripted failure {status}", started))
        if self.api_key is not None and path not in OPEN_PATHS:
            bearer = (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
            given = handler.headers.get("api-key") or bearer or None
            if given is None or not secrets.compare_digest(given, self.api_key):
                return self._answer(handler, record, 401, MISSING_KEY if given is None else WRONG_KEY)
        try:
            with self._lock:
                result = self._route(method, [unquote(p) for p in path.strip("/").split("/") if p], query, body)
        except QdrantError as exc:
            return self._answer(handler, record, exc.status, _error_body(exc.message, started))
        if isinstance(result, _Raw):
            return self._answer(handler, record, 200, result.body)
        envelope = {"result": to_jsonable_python(result), "status": "ok", "time": time.monotonic() - started}
        self._answer(handler, record, 200, envelope)

    def _record(self, method: str, path: str, query: dict[str, str], handler: BaseHTTPRequestHandler,
                body: Any, size: int) -> RecordedRequest:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = RecordedRequest(method, path, query, headers, body, size)
        with self._lock:
            self.requests.append(record)
        return record

    def _answer(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, status: int, body: Any) -> None:
        record.status = status
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            pass

    # --- the API -------------------------------------------------------------------------------------

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> Any:
        if not parts and method == "GET":
            return _Raw({"title": "qdrant - vector search engine", "version": _server_version(), "commit": None})
        if parts in (["healthz"], ["livez"], ["readyz"]) and method == "GET":
            return _Raw("healthz check passed")
        if not parts or parts[0] != "collections":
            raise QdrantError(404, f"no route for {method} /{'/'.join(parts)}")
        if len(parts) == 1 and method == "GET":
            return models.CollectionsResponse(
                collections=[models.CollectionDescription(name=name) for name in sorted(self._sizes)])
        name, rest = parts[1], parts[2:]
        if not rest:
            if method == "GET":
                return self._info(name)
            if method == "PUT":
                self._create(name, _parse(models.CreateCollection, body or {}))
                return True
            if method == "DELETE":
                return self._drop(name)
        elif rest == ["exists"] and method == "GET":
            return models.CollectionExistence(exists=name in self._sizes)
        elif rest == ["index"] and method == "PUT":
            return self._index(name, _parse(models.CreateFieldIndex, body), query)
        elif rest == ["points"] and method == "PUT":
            return self._upsert(name, _parse(_POINT_INSERT, body), query)
        elif rest == ["points"] and method == "POST":
            return self._retrieve(name, _parse(models.PointRequest, body))
        elif rest == ["points", "delete"] and method == "POST":
            return self._delete(name, _parse(_POINTS_SELECTOR, body), query)
        elif rest == ["points", "query"] and method == "POST":
            return self._query(name, _parse(models.QueryRequest, body or {}))
        elif rest == ["points", "search"] and method == "POST":
            return self._search(name, _parse(models.SearchRequest, body))
        elif rest == ["points", "count"] and method == "POST":
            return self._count(name, _parse(models.CountRequest, body or {}))
        elif rest == ["points", "scroll"] and method == "POST":
            return self._scroll(name, _parse(models.ScrollRequest, body or {}))
        raise QdrantError(404, f"no route for {method} /{'/'.join(parts)}")

    def _size(self, name: str) -> int:
        if name not in self._sizes:
            raise _not_found(name)
        return self._sizes[name]

    def _update_result(self, query: dict[str, str]) -> models.UpdateResult:
        self._operation_id += 1
        status = models.UpdateStatus.COMPLETED if query.get("wait") == "true" else models.UpdateStatus.ACKNOWLEDGED
        return models.UpdateResult(operation_id=self._operation_id, status=status)

    def _create(self, name: str, request: models.CreateCollection) -> None:
        if name in self._sizes:
            raise QdrantError(409, f"Wrong input: Collection `{name}` already exists!")
        if not isinstance(request.vectors, models.VectorParams):
            raise QdrantError(400, "the fake supports one unnamed vector per point")
        self._store.create_collection(name, vectors_config=request.vectors)
        self._sizes[name] = request.vectors.size
        self.created_with[name] = request
        self.payload_indexes[name] = {}

    def _drop(self, name: str) -> bool:
        if name not in self._sizes:
            return False
        self._store.delete_collection(name)
        del self._sizes[name]
        self.created_with.pop(name, None)
        self.payload_indexes.pop(name, None)
        return True

    def _info(self, name: str) -> models.CollectionInfo:
        self._size(name)
        info = self._store.get_collection(name)
        requested = self.created_with[name].hnsw_config
        if requested is not None:
            hnsw = info.config.hnsw_config.model_copy(update=requested.model_dump(exclude_none=True))
            info = info.model_copy(update={"config": info.config.model_copy(update={"hnsw_config": hnsw})})
        points = self._store.count(name, exact=True).count
        schema = {}
        for field_name, field_schema in self.payload_indexes[name].items():
            if isinstance(field_schema, models.PayloadSchemaType):
                schema[field_name] = models.PayloadIndexInfo(data_type=field_schema, points=points)
            else:
                data_type = models.PayloadSchemaType(str(getattr(field_schema.type, "value", field_schema.type)))
                schema[field_name] = models.PayloadIndexInfo(data_type=data_type, params=field_schema, points=points)
        return info.model_copy(update={"payload_schema": schema})

    def _index(self, name: str, request: models.CreateFieldIndex, query: dict[str, str]) -> models.UpdateResult:
        self._size(name)
        if request.field_schema is None:
            raise QdrantError(400, "Bad request: the field schema is required")
        self.payload_indexes[name][request.field_name] = request.field_schema
        return self._update_result(query)

    def _check_vector(self, name: str, vector: Any) -> list[float]:
        size = self._size(name)
        if isinstance(vector, models.NearestQuery):
            vector = vector.nearest
        if not isinstance(vector, list) or not all(isinstance(x, float | int) for x in vector):
            raise QdrantError(400, "Wrong input: the fake supports one unnamed dense vector")
        if len(vector) != size:
            raise QdrantError(400, f"Wrong input: Vector dimension error: expected dim: {size}, got {len(vector)}")
        return vector

    def _upsert(self, name: str, operation: Any, query: dict[str, str]) -> models.UpdateResult:
        self._size(name)
        if isinstance(operation, models.PointsBatch):
            ids, vectors = operation.batch.ids, operation.batch.vectors
            payloads = operation.batch.payloads or [None] * len(ids)
            if not isinstance(vectors, list) or len(vectors) != len(ids) or len(payloads) != len(ids):
                raise QdrantError(400, "Wrong input: the batch's ids, vectors and payloads differ in length")
            points = [models.PointStruct(id=i, vector=v, payload=p)
                      for i, v, p in zip(ids, vectors, payloads, strict=True)]
        else:
            points = operation.points
        for point in points:
            _check_point_id(point.id)
            self._check_vector(name, point.vector)
        self._store.upsert(name, points=points, wait=True)
        return self._update_result(query)

    def _retrieve(self, name: str, request: models.PointRequest) -> list[models.Record]:
        self._size(name)
        for point_id in request.ids:
            _check_point_id(point_id)
        return self._store.retrieve(name, ids=request.ids, with_payload=request.with_payload or False,
                                    with_vectors=request.with_vector or False)

    def _delete(self, name: str, selector: Any, query: dict[str, str]) -> models.UpdateResult:
        self._size(name)
        if isinstance(selector, models.PointIdsList):
            for point_id in selector.points:
                _check_point_id(point_id)
        self._store.delete(name, points_selector=selector, wait=True)
        return self._update_result(query)

    def _nearest(self, name: str, vector: Any, query_filter: models.Filter | None, params: Any, limit: int,
                 offset: int | None, with_payload: Any, with_vector: Any,
                 score_threshold: float | None) -> list[models.ScoredPoint]:
        vector = self._check_vector(name, vector)
        if limit < 1:
            raise QdrantError(422, "Validation error in JSON body: [limit: value 0 invalid, must be 1 or larger]")
        self.queries.append(RecordedQuery(name, query_filter, params, limit))
        # Local mode is exact and ignores `params` (it would warn): they are recorded above instead.
        return self._store.query_points(
            name, query=vector, query_filter=query_filter, limit=limit, offset=offset,
            with_payload=with_payload if with_payload is not None else False,
            with_vectors=with_vector if with_vector is not None else False, score_threshold=score_threshold,
        ).points

    def _query(self, name: str, request: models.QueryRequest) -> models.QueryResponse:
        if request.prefetch is not None or request.using is not None or request.lookup_from is not None:
            raise QdrantError(400, "the fake supports a plain nearest-vector query")
        points = self._nearest(name, request.query, request.filter, request.params, request.limit or 10,
                               request.offset, request.with_payload, request.with_vector, request.score_threshold)
        return models.QueryResponse(points=points)

    def _search(self, name: str, request: models.SearchRequest) -> list[models.ScoredPoint]:
        return self._nearest(name, request.vector, request.filter, request.params, request.limit, request.offset,
                             request.with_payload, request.with_vector, request.score_threshold)

    def _count(self, name: str, request: models.CountRequest) -> models.CountResult:
        self._size(name)
        exact = True if request.exact is None else request.exact
        return self._store.count(name, count_filter=request.filter, exact=exact)

    def _scroll(self, name: str, request: models.ScrollRequest) -> models.ScrollResult:
        self._size(name)
        records, next_offset = self._store.scroll(
            name, scroll_filter=request.filter, limit=request.limit or 10, offset=request.offset,
            with_payload=True if request.with_payload is None else request.with_payload,
            with_vectors=request.with_vector or False, order_by=request.order_by,
        )
        return models.ScrollResult(points=records, next_page_offset=next_offset)


@dataclass(frozen=True)
class _Raw:
    """An answer outside the envelope (`GET /` and the health paths)."""

    body: Any


def _error_body(message: str, started: float) -> dict[str, Any]:
    return {"status": {"error": message}, "time": time.monotonic() - started}


def _drain(handler: BaseHTTPRequestHandler, length: int) -> None:
    """Read and drop a body too large to keep, so the client reads the answer instead of a reset socket."""
    while length > 0:
        chunk = handler.rfile.read(min(length, 1 << 20))
        if not chunk:
            break
        length -= len(chunk)


# --- pointing the platform at a fake -------------------------------------------------------------------


def _platform_stores_forget() -> None:
    """Drop the stores (clients and known collections) the platform keeps per server URL."""
    from apps.kb import vectorstores

    vectorstores._qdrant_store.cache_clear()


def _new_api_key() -> str:
    return "qdrant-test-" + secrets.token_urlsafe(12)


@contextlib.contextmanager
def qdrant_platform_running() -> Iterator[FakeQdrant]:
    """A started fake made the platform's vector store for the block (override_settings), then stopped."""
    from django.test import override_settings

    with FakeQdrant(api_key=_new_api_key()) as fake:
        _platform_stores_forget()
        try:
            with override_settings(QDRANT_URL=fake.url, QDRANT_API_KEY=fake.api_key):
                yield fake
        finally:
            _platform_stores_forget()


@pytest.fixture
def qdrant_server():
    with FakeQdrant(api_key=_new_api_key()) as fake:
        yield fake


@pytest.fixture
def qdrant_platform(settings, qdrant_server):
    settings.QDRANT_URL, settings.QDRANT_API_KEY = qdrant_server.url, qdrant_server.api_key
    _platform_stores_forget()
    yield qdrant_server
    _platform_stores_forget()
