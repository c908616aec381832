"""Bots of a tenant and what their `.gbai` package defines (tenant schema).

A Bot is one `<name>.gbai` package in the tenant's drive. Its scripts, configuration and system prompt are
derived from the drive by the DriveMonitor (apps.drive); bot memory and bot tables are written by scripts.
"""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models.fields.json import KT

from apps.core.fields import EncryptedJSONField, EncryptedTextField

# Upstream bot names are path segments (`<bot>.gbai`) and URL segments (`/<bot>/`): keep them plain.
BOT_NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
BOT_NAME_VALIDATOR = RegexValidator(BOT_NAME_RE, "lower-case letters, digits, - and _ only")


class Bot(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[BOT_NAME_VALIDATOR])
    display_name = models.CharField(max_length=200, blank=True)
    # From `<bot>.gbot/PROMPT.md` (or prompt.txt): the bot's base system prompt.
    system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped whenever the bot's config.csv rows change: processes key their decrypted copy by it
    # (apps.bots.selectors.bot_config_values), so a chat turn does not read and decrypt the rows each time.
    config_revision = models.PositiveIntegerField(default=0)
    # Bumped whenever the bot's scripts change: processes key their loaded, compiled scripts by it
    # (apps.bots.runtime.bot_script_program), so a chat turn does not read the script row each time.
    scripts_revision = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BotRowsQuerySet(models.QuerySet):
    """Every write through the ORM marks the bots' per-process copies stale (the model's `bots_changed`)."""

    def update(self, **kwargs):
        bot_ids = set(self.values_list("bot_id", flat=True))
        count = super().update(**kwargs)
        self.model.bots_changed(bot_ids)
        return count

    def delete(self):
        bot_ids = set(self.values_list("bot_id", flat=True))
        result = super().delete()
        self.model.bots_changed(bot_ids)
        return result

    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(list(objs), *args, **kwargs)
        self.model.bots_changed({row.bot_id for row in created})
        return created


class BotRevisionedRow(models.Model):
    """Rows of a bot that processes keep copies of, keyed by a revision of the bot that every write bumps."""

    objects = BotRowsQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        type(self).bots_changed({self.bot_id})

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        type(self).bots_changed({self.bot_id})
        return result

    @classmethod
    def bots_changed(cls, bot_ids: set[int]) -> None:
        raise NotImplementedError


class BotScript(BotRevisionedRow):
    """A `.bas` file of the bot, compiled when its source hash changes."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="scripts")
    # Script name = file stem (`book-visit`): the tool's name and the key for CALL / `start`.
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1024)
    source = models.TextField()
    source_hash = models.CharField(max_length=64)
    # Compiler metadata (PARAMs, DESCRIPTION, schedules, KBs and tools referenced) when it compiled.
    metadata = models.JSONField(default=dict, blank=True)
    tool_schema = models.JSONField(null=True, blank=True)
    # [{"line", "column", "message"}]: empty when the script compiled.
    errors = models.JSONField(default=list, blank=True)
    # A newer file that did not compile while this version did: the version above keeps running, and this is
    # what was refused, with its errors (shown in the console), until a version that compiles replaces both.
    rejected_source = models.TextField(blank=True, default="")
    rejected_errors = models.JSONField(default=list, blank=True)
    compiled_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["bot", "name"]
        constraints = [models.UniqueConstraint(fields=["bot", "name"], name="bot_script_name_unique")]

    def __str__(self) -> str:
        return f"{self.bot.name}/{self.name}"

    @classmethod
    def bots_changed(cls, bot_ids: set[int]) -> None:
        _scripts_changed(bot_ids)

    @property
    def ok(self) -> bool:
        return not self.errors


def _bots_changed(bot_ids: set[int], revision: str, forget_one) -> None:
    """Rows of these bots were written: bump their `revision` field (other processes see it on their next read
    of the bot row) and drop this process's copies with `forget_one(schema, bot_id)`, now and at commit (a
    reader may load the old rows again before the transaction ends)."""
    from django.db import connection, transaction

    bot_ids = {i for i in bot_ids if i is not None}
    if not bot_ids:
        return
    Bot.objects.filter(pk__in=bot_ids).update(**{revision: models.F(revision) + 1})
    schema = connection.schema_name

    def forget() -> None:
        for bot_id in bot_ids:
            forget_one(schema, bot_id)

    forget()
    transaction.on_commit(forget)


def _config_changed(bot_ids: set[int]) -> None:
    """See apps.bots.selectors.bot_config_values."""
    from apps.bots.selectors import bot_config_forget

    _bots_changed(bot_ids, "config_revision", bot_config_forget)


def _scripts_changed(bot_ids: set[int]) -> None:
    """See apps.bots.runtime.bot_script_program."""
    from apps.bots.runtime import bot_scripts_forget

    _bots_changed(bot_ids, "scripts_revision", bot_scripts_forget)


class BotConfig(BotRevisionedRow):
    """One `key,value` row of the bot's `config.csv` (replaced as a whole on each sync).

    Values that reference a secret (`vault:path#key`) are stored as the reference, never resolved here;
    every value is encrypted at rest (values cannot be filtered on: look keys up, then read values).
    """

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="config")
    key = models.CharField(max_length=200)
    # Encrypted at rest: config holds credentials (llm-key, email-pass...) when they are not vault: refs.
    value = EncryptedTextField(blank=True)
    line = models.PositiveIntegerField()

    class Meta:
        ordering = ["bot", "line"]
        constraints = [models.UniqueConstraint(fields=["bot", "key"], name="bot_config_key_unique")]

    def __str__(self) -> str:
        return f"{self.key}={self.value[:40]}"

    @classmethod
    def bots_changed(cls, bot_ids: set[int]) -> None:
        _config_changed(bot_ids)


class BotMemory(models.Model):
    """SET BOT MEMORY / GET BOT MEMORY: one value per key, shared by every session of the bot.

    The value (any JSON value) is encrypted at rest, bound to the tenant (apps.core.fields): scripts keep
    customer data there. It cannot be filtered on; look rows up by bot and key.
    """

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="memory")
    key = models.CharField(max_length=200)
    value = EncryptedJSONField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "key"], name="bot_memory_key_unique")]

    def __str__(self) -> str:
        return self.key


class BotTableRow(models.Model):
    """A row of a bot table (FIND/SAVE/INSERT/UPDATE/DELETE), schemaless: columns live in `data`.

    Tables are named by scripts (`"customers"`, `"products.csv"`); names are stored lower-case. Rows of a
    `.gbdata/<name>.csv` file are imported into the table `<name>.csv`.
    """

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="table_rows")
    table = models.CharField(max_length=200)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["bot", "table"], name="bot_table_idx"),
            # SAVE finds the row to update by its id (apps.bots.host.BotHost.save).
            models.Index(models.F("bot"), models.F("table"), KT("data__id"), name="bot_table_row_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.table}#{self.pk}"


class BotSchedule(models.Model):
    """A `SET SCHEDULE` of a compiled script: when the script runs next (the job runner claims due rows).

    Rows are derived from the script's compiler metadata: replaced when the script is recompiled and
    dropped with it, so a schedule can never outlive or diverge from its script.
    """

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="schedules")
    script = models.ForeignKey(BotScript, on_delete=models.CASCADE, related_name="schedules")
    expression = models.CharField(max_length=200)  # as written: "every day at 9am" or a cron
    cron = models.CharField(max_length=100)
    line = models.PositiveIntegerField()
    timezone = models.CharField(max_length=64, default="UTC")
    next_run_at = models.DateTimeField(db_index=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["next_run_at"]

    def __str__(self) -> str:
        return f"{self.script} {self.cron}"
