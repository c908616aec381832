"""Partial HNSW indexes on Chunk.embedding, one per supported vector size.

`embedding` is untyped (bots may use models of different sizes), and pgvector can only index a typed
vector: each index covers the rows of one size through the expression `embedding::vector(d)` and the
predicate `dimensions = d`. `apps.kb.vectorstores.pg_search_queryset` repeats both exactly so the planner
uses them. Chunk is a tenant model: this runs in every tenant schema; the `vector` type and its operator
classes live in `public`, which is on the search path.
"""

from django.db import migrations

# Keep in step with apps.kb.vectorstores.INDEXED_DIMENSIONS (a test checks it).
DIMENSIONS = (384, 768, 1024, 1536)


def _create(dimensions: int) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS chunk_embedding_hnsw_{dimensions} ON kb_chunk "
        f"USING hnsw ((embedding::vector({dimensions})) vector_cosine_ops) WHERE dimensions = {dimensions}"
    )


def _drop(dimensions: int) -> str:
    return f"DROP INDEX IF EXISTS chunk_embedding_hnsw_{dimensions}"


class Migration(migrations.Migration):
    dependencies = [
        ("kb", "0002_document_chunks_done_document_chunks_total_and_more"),
    ]

    operations = [migrations.RunSQL(_create(d), reverse_sql=_drop(d)) for d in DIMENSIONS]
