"""A Qdrant collection dropped while the store works on it: "nothing there", not a failure.

The store lists the collections, then deletes, counts or searches in each; it knows a collection it made
ready, then writes to it or makes its indexes. A collection dropped in between (by an operator, a Qdrant
restored from an older snapshot) made Qdrant answer 404 `Collection ... doesn't exist!`, and the store raised
it: a document's removal, a tenant's purge, a re-index (its clean-up of the other collections), a search or a
count failed, when there was simply nothing left to delete, find or count. Writes make the collection again
instead. Only that 404 means "missing": any other failure, a 404 of anything else included, still reaches the
caller.

The collection is dropped behind the store's back through the server's HTTP API, by a client of its own, at
the moment the store's request arrives (`FakeQdrant.on_request`), so the store has already decided the
collection exists. The store is the platform's own (QDRANT_URL, QDRANT_API_KEY), on our Qdrant REST server on
loopback (tests/support/qdrant_fake.py). The store needs no database: tenants and bots are names here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from qdrant_client.http.exceptions import UnexpectedResponse

from apps.kb.vectorstores import ChunkRecord, QdrantStore, qdrant_collection_name, vector_store_for_settings
from tests.support.qdrant_fake import FakeQdrant, RecordedRequest

TENANT, OTHER_TENANT, BOT = "tenant_drop", "tenant_keep", "drop-bot"
DIM = 8
ONE, TWO = "model-one", "model-two"  # two models: two collections (C1 sorts first)
C1, C2 = qdrant_collection_name(ONE, DIM), qdrant_collection_name(TWO, DIM)
# How long the two "workers" of the concurrent test wait for each other at the server.
MEET_TIMEOUT_S = 10


def unit(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=DIM)
    return (vector / np.linalg.norm(vector)).tolist()


def records(document_id: int, vectors: list[list[float] | None], kb: str = "faq") -> list[ChunkRecord]:
    return [
        ChunkRecord(document_id=document_id, document_path=f"{BOT}.gbai/{BOT}.gbkb/{kb}/{document_id}.md", kb=kb,
                    index=i, text=f"doc {document_id} chunk {i}", start_char=i * 10, end_char=i * 10 + 9, page=None,
                    heading="", vector=vector)
        for i, vector in enumerate(vectors)
    ]


def replace(store: QdrantStore, document_id: int, vectors: list[list[float] | None], *, model: str = ONE,
            tenant: str = TENANT) -> None:
    store.replace_document(tenant=tenant, bot=BOT, bot_id=1, kb_id=1, document_id=document_id,
                           records=records(document_id, vectors), model=model)


def count(store: QdrantStore, tenant: str = TENANT) -> int:
    return store.count(tenant=tenant, bot=BOT)


def drop_when(fake: FakeQdrant, method: str, path: str, collection: str) -> list[int]:
    """Drop `collection` through the HTTP API, with a client of its own, when the first `method path` request
    arrives, just before the server answers it. Returns the list the drop's answer is appended to."""
    dropped: list[int] = []

    def hook(request: RecordedRequest) -> None:
        if not dropped and request.method == method and request.path == path:
            dropped.append(0)
            outsider = fake.client()
            try:
                dropped[0] = int(outsider.delete_collection(collection))
            finally:
                outsider.close()

    fake.on_request = hook
    return dropped


@pytest.fixture
def store(qdrant_platform) -> QdrantStore:
    built = vector_store_for_settings()  # the platform's own client of the server, as in production
    assert isinstance(built, QdrantStore)
    return built


def test_removing_a_document_from_a_collection_dropped_meanwhile_deletes_nothing_there(store, qdrant_platform):
    replace(store, 1, [unit(1), unit(2)], model=ONE)
    replace(store, 3, [unit(3)], model=TWO)  # the removal must still reach the second collection ...
    replace(store, 4, [unit(4)], model=TWO)  # ... and take only its document there
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/delete", C1)

    store.delete_document(tenant=TENANT, bot=BOT, document_id=3)

    assert dropped == [1] and qdrant_platform.statuses("POST", f"/collections/{C1}/points/delete")[-1] == 404
    assert qdrant_platform.collection_names() == [C2]
    assert count(store) == 1  # C1 went with document 1; document 3 was deleted from C2, document 4 stays
    hits = store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(3), limit=5)
    assert [h.document_id for h in hits] == [4]


def test_a_bots_purge_goes_on_past_a_collection_dropped_meanwhile(store, qdrant_platform):
    replace(store, 1, [unit(1)], model=ONE)
    replace(store, 2, [unit(2), unit(3)], model=TWO)
    replace(store, 2, [unit(2)], model=TWO, tenant=OTHER_TENANT)
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/delete", C1)

    store.delete_bot(tenant=TENANT, bot=BOT)

    assert dropped == [1]
    assert count(store) == 0 and count(store, OTHER_TENANT) == 1  # C2's points of the bot went, and only those


def test_a_count_of_a_collection_dropped_meanwhile_is_zero(store, qdrant_platform):
    replace(store, 1, [unit(1), unit(2)], model=ONE)
    replace(store, 2, [unit(3)], model=TWO)
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/count", C1)

    assert count(store) == 1  # C1's two points are gone with it; C2's one is counted
    assert dropped == [1] and qdrant_platform.statuses("POST", f"/collections/{C1}/points/count") == [404]


def test_a_search_of_every_collection_skips_one_dropped_meanwhile(store, qdrant_platform):
    replace(store, 1, [unit(1)], model=ONE)
    replace(store, 2, [unit(1)], model=TWO)
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/query", C1)

    hits = store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(1), limit=5)

    assert dropped == [1] and [h.document_id for h in hits] == [2]


def test_a_search_of_a_models_collection_dropped_meanwhile_finds_nothing(store, qdrant_platform):
    replace(store, 1, [unit(1)], model=ONE)
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/query", C1)

    assert store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(1), limit=5, model=ONE) == []
    assert dropped == [1]
    # A model that never had a collection: nothing either.
    assert store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(1), limit=5, model="model-three") == []


def test_a_reindex_under_another_model_goes_on_past_the_old_collection_dropped_meanwhile(store, qdrant_platform):
    """The re-index writes the new model's collection, then deletes the document from every other one."""
    replace(store, 1, [unit(1), unit(2)], model=ONE)
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/delete", C1)

    replace(store, 1, [unit(3)], model=TWO)

    assert dropped == [1] and count(store) == 1
    assert [h.index for h in store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(3), limit=5)] == [0]


def test_a_replace_whose_collection_is_dropped_after_its_upsert_succeeds_and_the_next_one_makes_it_again(
        store, qdrant_platform):
    """Chunk 1 has no vector: its stale point is deleted by id in the collection just written, which is gone by
    then (with the points just written: as if it had been dropped a moment after the replace)."""
    replace(store, 1, [unit(1), unit(2), unit(3)], model=ONE)
    dropped = drop_when(qdrant_platform, "POST", f"/collections/{C1}/points/delete", C1)

    replace(store, 1, [unit(1), None, unit(3)], model=ONE)

    assert dropped == [1] and count(store) == 0
    qdrant_platform.on_request = None
    upserts_before = len(qdrant_platform.statuses("PUT", f"/collections/{C1}/points"))
    replace(store, 1, [unit(1), None, unit(3)], model=ONE)
    assert count(store) == 2
    # The store knew the collection was gone: it made it again before writing, instead of failing a write first.
    assert qdrant_platform.statuses("PUT", f"/collections/{C1}/points")[upserts_before:] == [200]
    assert qdrant_platform.payload_index(C1, "tenant").is_tenant


def test_a_collection_dropped_between_its_creation_and_its_indexes_is_made_again(store, qdrant_platform):
    dropped = drop_when(qdrant_platform, "PUT", f"/collections/{C1}/index", C1)

    replace(store, 1, [unit(1), unit(2)], model=ONE)

    assert dropped == [1] and count(store) == 2
    assert qdrant_platform.statuses("PUT", f"/collections/{C1}") == [200, 200]  # made, dropped, made again
    assert qdrant_platform.payload_index(C1, "tenant").is_tenant and qdrant_platform.payload_index(C1, "index")


def test_two_workers_making_a_dropped_collection_again_at_once_both_write(qdrant_platform):
    """Two processes, each knowing the collection ready, find it dropped on their next write and both create it:
    the server holds both creations until both have arrived, so one makes it and the other is told it exists
    (409), which must not fail its write."""
    first, second = QdrantStore(qdrant_platform.client()), QdrantStore(qdrant_platform.client())
    replace(first, 1, [unit(1)])
    replace(second, 2, [unit(2)])
    assert first.client.delete_collection(C1)  # e.g. by an operator
    both_creating = threading.Barrier(2, timeout=MEET_TIMEOUT_S)

    def hold_the_creations(request: RecordedRequest) -> None:
        if request.method == "PUT" and request.path == f"/collections/{C1}":
            both_creating.wait()

    qdrant_platform.on_request = hold_the_creations
    errors: list[BaseException] = []

    def write(worker: QdrantStore, document_id: int, seed: int) -> Callable[[], None]:
        def run() -> None:
            try:
                replace(worker, document_id, [unit(seed), unit(seed + 1)])
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=write(first, 1, 10)), threading.Thread(target=write(second, 2, 20))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(MEET_TIMEOUT_S * 3)
    assert errors == []
    assert sorted(qdrant_platform.statuses("PUT", f"/collections/{C1}")[-2:]) == [200, 409]
    assert count(first) == 4
    first.client.close()
    second.client.close()


@pytest.mark.parametrize("status", [404, 500])
def test_other_failures_of_a_delete_count_or_search_still_fail(store, qdrant_platform, status):
    """Only Qdrant's "collection doesn't exist" means nothing there: a 404 of anything else (here the fake's
    scripted failure, whose body names no collection, as a proxy in front of Qdrant answers for a path it does
    not know) or a 500 is reported."""
    replace(store, 1, [unit(1)])

    def fail_in_the_collection(request: RecordedRequest) -> None:
        if request.path.startswith(f"/collections/{C1}/points"):
            qdrant_platform.fail_next.append(status)

    qdrant_platform.on_request = fail_in_the_collection
    for call in (lambda: store.delete_document(tenant=TENANT, bot=BOT, document_id=1),
                 lambda: store.delete_bot(tenant=TENANT, bot=BOT),
                 lambda: count(store),
                 lambda: store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(1), limit=5),
                 lambda: store.search(tenant=TENANT, bot=BOT, kbs=["faq"], vector=unit(1), limit=5, model=ONE)):
        with pytest.raises(UnexpectedResponse) as failed:
            call()
        assert failed.value.status_code == status
    qdrant_platform.on_request = None
    assert count(store) == 1  # nothing was taken for "missing"
    assert qdrant_platform.collection_names() == [C1]
