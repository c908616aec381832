"""Knowledge bases of a bot and their documents (tenant schema).

A KB is a first-level folder under `<bot>.gbkb/`; each supported file in it is a Document. The DriveMonitor
registers and removes documents; the indexer (extraction, chunks, embeddings) moves them to `indexed`.
"""

from django.db import models


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
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path
