"""Knowledge bases of a bot and their documents (tenant schema).

A KB is a first-level folder under `<bot>.gbkb/`; each supported file in it is a Document. The DriveMonitor
registers and removes documents; the indexer (extraction, chunks, embeddings) moves them to `indexed`.
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from pgvector.django import VectorField

# PostgreSQL text-search configuration of the lexical index; searches must use the same one to hit it.
# English stemming ("returns" ~ "returned"); a multilingual deployment would pick "simple".
TEXT_SEARCH_CONFIG = "english"


class KnowledgeBase(models.Model):
    bot = models.ForeignKey("bots.Bot", on_delete=models.CASCADE, related_name="knowledge_bases")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["bot", "name"]
        constraints = [models.UniqueConstraint(fields=["bot", "name"], name="kb_name_unique")]

    def __str__(self) -> str:
        return f"{self.bot.name}/{self.name}"


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "waiting for the indexer"
        INDEXED = "indexed", "indexed"
        FAILED = "failed", "failed"

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    # Drive key of the file: `<bot>.gbai/<bot>.gbkb/<kb>/<file>`.
    path = models.CharField(max_length=1024, unique=True)
    etag = models.CharField(max_length=128)
    size = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    # Progress of the current indexing run, for the console's progress bars.
    chunks_done = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    # The ETag whose chunks are stored: indexing the same content twice is a no-op.
    indexed_etag = models.CharField(max_length=128, blank=True)
    # Indexing runs started for the current ETag: a file that kills its worker (out of memory) is redelivered
    # by the broker forever otherwise; past a limit it is shown as failed instead.
    index_attempts = models.PositiveSmallIntegerField(default=0)
    # Bumped when the document must be indexed again with the same content (the bot's embedding model
    # changed): a run records it when it starts and writes nothing if it moved meanwhile, so a run that began
    # with the old model cannot store old-model vectors over the re-index and mark them current.
    index_generation = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class Chunk(models.Model):
    """A passage of a document, with its embedding (pgvector backend) and its place for citations.

    Rows of one document are replaced in one transaction when it is re-indexed. `embedding` is untyped
    so bots may use models of different sizes; `dimensions` selects the partial HNSW index that serves it.
    """

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    # Denormalised from the document: every search filters on them, without joins.
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    bot = models.ForeignKey("bots.Bot", on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    text = models.TextField()
    start_char = models.PositiveIntegerField(default=0)
    end_char = models.PositiveIntegerField(default=0)
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=300, blank=True)
    embedding = VectorField(null=True, blank=True)
    dimensions = models.PositiveSmallIntegerField(null=True, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["document", "index"]
        constraints = [models.UniqueConstraint(fields=["document", "index"], name="chunk_document_index_unique")]
        indexes = [
            models.Index(fields=["bot", "kb"], name="chunk_bot_kb_idx"),
            GinIndex(SearchVector("text", config=TEXT_SEARCH_CONFIG), name="chunk_text_fts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.document.path}#{self.index}"
