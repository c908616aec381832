"""The BASIC host backed by a bot's data: configuration, bot memory, bot tables and the bot's drive.

Chat sessions, scheduled jobs and tool calls build on this host (subclassing it) and add what belongs to
their channel (TALK to a user, HEAR, LLM). Everything here runs in the current tenant's schema, and every
query is scoped to the one bot the host was made for.
"""

from __future__ import annotations

import json
from decimal import Decimal

from django.db import transaction
from django.db.models.fields.json import KT
from django.utils import timezone

from apps.basic.host import Host, HostError, parse_filter, row_matches_filter, save_row, table_columns_from_metadata
from apps.bots import services as bot_services
from apps.bots.config_csv import config_lookup
from apps.bots.models import Bot, BotScript, BotTableRow
from apps.bots.selectors import bot_config_values
from apps.bots.services import TABLE_ROWS_MAX, bot_table_lock
from apps.core.wire import contains_nul
from apps.drive.backends import DriveKeyError, DriveObjectTooLarge, drive_key_validate
from apps.drive.storage import package_root, tenant_drive

# FIND returns at most this many rows, as upstream's LIMIT 10 does.
FIND_LIMIT = 10
# Rows a FIND/UPDATE/DELETE examines in one table: every row a table can hold (INSERT, SAVE and a .gbdata
# import stop there), so no stored row is ever out of a FIND's sight.
TABLE_SCAN_LIMIT = TABLE_ROWS_MAX
# Rows read from the database at a time while scanning: a FIND that matches early reads little.
TABLE_SCAN_CHUNK = 1000
# A file a script reads from the bot's drive is loaded into a variable: keep it a reasonable size.
FILE_READ_MAX_BYTES = 5 * 1024 * 1024
# A file a script writes (or appends to) stays readable by READ: a script looping on WRITE ... APPEND must
# not fill the tenant's storage.
FILE_WRITE_MAX_BYTES = FILE_READ_MAX_BYTES


class BotHost(Host):
    def __init__(self, bot: Bot, *, user: dict | None = None, session: dict | None = None,
                 kbs: list[str] | None = None) -> None:
        self.bot = bot
        self._user = user or {}
        self._session = session or {}
        self._config: dict[str, str] | None = None
        self._table_definitions: list | None = None  # TABLE blocks of the bot's scripts, read once per host
        # A table's columns known from its first stored row, once found (a loop of positional SAVEs read it each time).
        self._row_columns: dict[str, list[str]] = {}
        # KBs attached with USE KB: session state, which the chat host saves with the session (spec 5.8).
        self.kbs: list[str] = list(kbs or [])

    # -- context and configuration ---------------------------------------------------------------
    def context(self) -> dict:
        return {"user": self._user, "session": self._session, "bot": {"id": self.bot.pk, "name": self.bot.name}}

    def config_values(self) -> dict[str, str]:
        if self._config is None:
            self._config = bot_config_values(self.bot)
        return self._config

    def get_config(self, key: str) -> object:
        return config_lookup(self.config_values(), key, "")

    # -- knowledge bases -------------------------------------------------------------------------
    def use_kb(self, name: str) -> None:
        # A KB not indexed yet is still attached: it answers once its documents are indexed (spec 5.8).
        name = str(name).strip()
        if name and name not in self.kbs:
            self.kbs.append(name)

    def clear_kb(self, name: str | None) -> None:
        self.kbs = [] if name is None or str(name).strip().upper() in {"", "ALL"} else [
            kb for kb in self.kbs if kb != str(name).strip()]

    def think_kb(self, query: str) -> object:
        from apps.kb.search import kb_search

        if not self.kbs:
            return []
        result = kb_search(bot=self.bot, kbs=self.kbs, query=str(query))
        return [{"text": h.text, "source": h.document_path, "kb": h.kb, "score": round(h.score, 6)}
                for h in result.hits]

    # -- memory ----------------------------------------------------------------------------------
    def set_bot_memory(self, key: str, value: object) -> None:
        try:
            bot_services.bot_memory_set(bot=self.bot, key=str(key), value=value)
        except bot_services.BotFileError as exc:
            raise HostError(str(exc)) from None

    def get_bot_memory(self, key: str) -> object:
        return bot_services.bot_memory_get(bot=self.bot, key=str(key))

    # -- tables ----------------------------------------------------------------------------------
    def _rows(self, table: str):
        """The table's rows in insertion order, read in chunks (a FIND that matches early reads little)."""
        rows = BotTableRow.objects.filter(bot=self.bot, table=_table_name(table)).order_by("id")
        return rows[:TABLE_SCAN_LIMIT].iterator(chunk_size=TABLE_SCAN_CHUNK)

    def _room_for_one(self, table: str) -> None:
        """Refuse a row beyond TABLE_ROWS_MAX (call holding the table's lock: concurrent writers cannot both
        take the last place)."""
        if BotTableRow.objects.filter(bot=self.bot, table=_table_name(table)).count() >= TABLE_ROWS_MAX:
            raise HostError(f"table '{table}' is full: it holds {TABLE_ROWS_MAX} rows, the most a bot table "
                            "may hold; DELETE rows first")

    # In a transaction, the scan's server-side cursor streams: outside one, PostgreSQL would compute the whole
    # table for a cursor WITH HOLD before the first chunk, even when the first rows match.
    @transaction.atomic
    def find(self, table: str, filter_text: str) -> list:
        found = []
        conditions = parse_filter(filter_text)  # once, before the scan: a malformed filter fails on an empty table too
        for row in self._rows(table):
            if row_matches_filter(row.data, conditions):
                found.append(row.data)
                if len(found) >= FIND_LIMIT:
                    break
        return found

    def table_columns(self, table: str) -> tuple[list[str], bool]:
        """For a positional SAVE: the columns a TABLE block of one of the bot's scripts (tables.bas) declares,
        in order; else the keys of the table's first stored row (a `.gbdata` CSV's header), known by name only
        (the database does not keep a JSON object's key order)."""
        if self._table_definitions is None:
            scripts = BotScript.objects.filter(bot=self.bot).order_by("path").values_list("metadata", flat=True)
            self._table_definitions = [entry for metadata in scripts if isinstance(metadata, dict)
                                       for entry in metadata.get("tables") or []]
        columns = table_columns_from_metadata(self._table_definitions, table)
        if columns:
            return columns, True
        name = _table_name(table)
        if name not in self._row_columns:
            first = (BotTableRow.objects.filter(bot=self.bot, table=name).order_by("id")
                     .values_list("data", flat=True).first())
            if not isinstance(first, dict) or not first:
                return [], False  # no row yet: looked up again by the next SAVE, which may find the first one
            self._row_columns[name] = list(first)
        return self._row_columns[name], False

    # Writers of a table take its lock (apps.bots.services.bot_table_lock) for their transaction: two SAVEs of
    # one new id, in two sessions at once, would otherwise both find no row and both insert one.
    @transaction.atomic
    def save(self, table: str, values: list) -> object:
        data = save_row(values)
        _json_only(data)
        bot_table_lock(self.bot, _table_name(table))
        if "id" in data:
            rows = BotTableRow.objects.filter(bot=self.bot, table=_table_name(table))
            if isinstance(data["id"], dict | list):  # a structured id: the row holding an equal JSON value
                rows = rows.filter(data__id=data["id"])
            else:  # the row whose id reads the same as text (7 and "7" are one id, as upstream's string compare)
                rows = rows.annotate(row_id=KT("data__id")).filter(row_id=_id_text(data["id"]))
            row = rows.order_by("id").first()
            if row is not None and _row_update(row, {**row.data, **data}):
                return {"command": "save", "table": table, "id": data["id"], "rows_affected": 1}
        self._room_for_one(table)
        BotTableRow.objects.create(bot=self.bot, table=_table_name(table), data=data)
        return {"command": "save", "table": table, "id": data.get("id"), "rows_affected": 1}

    @transaction.atomic
    def insert(self, table: str, data: dict) -> object:
        row_data = dict(data)
        _json_only(row_data)
        bot_table_lock(self.bot, _table_name(table))
        self._room_for_one(table)
        row = BotTableRow.objects.create(bot=self.bot, table=_table_name(table), data=row_data)
        if "id" not in row_data:
            row.data["id"] = row.pk
            row.save(update_fields=["data"])
        return {"command": "insert", "table": table, "id": row.data["id"], "success": True}

    @transaction.atomic
    def update(self, table: str, filter_text: str, data: dict) -> int:
        _json_only(data)
        bot_table_lock(self.bot, _table_name(table))
        count = 0
        conditions = parse_filter(filter_text)
        for row in self._rows(table):
            if row_matches_filter(row.data, conditions) and _row_update(row, {**row.data, **data}):
                count += 1
        return count

    @transaction.atomic
    def delete(self, table: str, filter_text: str) -> int:
        bot_table_lock(self.bot, _table_name(table))
        conditions = parse_filter(filter_text)
        doomed = [row.pk for row in self._rows(table) if row_matches_filter(row.data, conditions)]
        BotTableRow.objects.filter(pk__in=doomed).delete()
        return len(doomed)

    # -- files: the bot's own drive area (`<bot>.gbai/<bot>.gbdrive/...`) -----------------------------
    def _drive_root(self) -> str:
        return f"{package_root(self.bot.name)}{self.bot.name}.gbdrive/"

    def _file_key(self, path: str) -> str:
        relative = str(path).strip().strip("/")
        if not relative or ".." in relative.split("/"):
            raise HostError(f"file path {path!r} must be relative to the bot's drive, without '..'")
        try:  # the drive's own rules (control characters, names it keeps for itself): the script's error
            return drive_key_validate(self._drive_root() + relative)
        except DriveKeyError as exc:
            raise HostError(str(exc)) from None

    def read_file(self, path: str) -> object:
        try:
            data = tenant_drive().read(self._file_key(path), max_bytes=FILE_READ_MAX_BYTES)
        except FileNotFoundError:
            raise HostError(f"file not found: {path}") from None
        except DriveObjectTooLarge:
            raise HostError(f"file {path} is larger than {FILE_READ_MAX_BYTES} bytes") from None
        except DriveKeyError as exc:
            raise HostError(str(exc)) from None
        return data.decode("utf-8", errors="replace")

    def write_file(self, path: str, content: object, append: bool) -> None:
        drive, key = tenant_drive(), self._file_key(path)
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        data = text.encode("utf-8")
        too_large = f"file {path} would be larger than {FILE_WRITE_MAX_BYTES} bytes; nothing was written"
        if len(data) > FILE_WRITE_MAX_BYTES:
            raise HostError(too_large)
        if append and drive.exists(key):
            try:  # refused from the file's size: a large file is not read into memory only to be refused
                data = drive.read(key, max_bytes=FILE_WRITE_MAX_BYTES - len(data)) + data
            except DriveObjectTooLarge:
                raise HostError(too_large) from None
        drive.write(key, data)

    def list_files(self, path: str) -> list:
        root = self._drive_root()
        prefix = self._file_key(path) + "/" if str(path or "").strip("/") else root
        return [
            {"name": entry.key.rsplit("/", 1)[-1], "path": entry.key[len(root):], "size": entry.size, "is_dir": False}
            for entry in tenant_drive().list(prefix)
        ]

    def delete_file(self, path: str) -> object:
        drive, key = tenant_drive(), self._file_key(path)
        if not drive.exists(key):
            return f"File not found: {path}"
        drive.delete(key)
        return True

    # -- LLM (apps.llm): the LLM keyword, the same providers, breakers and quota as the chat -----------------
    def llm(self, prompt: str) -> str:
        from apps.llm.errors import LLMError
        from apps.llm.services import complete, llm_settings_for

        try:
            return complete(llm_settings_for(self.bot, self.config_values()), str(prompt))
        except LLMError as exc:
            raise HostError(f"LLM: {exc}") from None

    # -- mail (apps.mail): SEND MAIL / BEGIN MAIL and TALK TO an e-mail address (spec 3.5.10) -----------
    def send_mail(self, to: str, subject: str, body: str, attachments: list) -> object:
        """Queued in the script's transaction; delivered by SMTP after commit (apps.mail)."""
        paths = attachments if isinstance(attachments, list) else [attachments] if attachments else []
        return self._mail("SEND MAIL", to=str(to), subject=str(subject), body=str(body),
                          attachments=[str(p) for p in paths])

    def talk_to(self, address: str, text: str) -> None:
        """TALK TO "name@example.com" (or "email:..." / "mailto:...") sends the text by mail; channel hosts
        override this for their own addresses (whatsapp:, ...)."""
        target = str(address).strip()
        for prefix in ("email:", "mailto:"):
            if target.lower().startswith(prefix):
                target = target[len(prefix):].strip()
        if "@" not in target or ":" in target:
            channel = target.split(":", 1)[0] if ":" in target else target
            raise HostError(f"TALK TO {channel!r}: this run can only send to an email address "
                            f"(TALK TO \"email:name@example.com\", message)")
        subject = f"Message from {self.bot.display_name or self.bot.name}"
        self._mail("TALK TO", to=target, subject=subject, body=str(text), attachments=[])

    def _mail(self, keyword: str, *, to: str, subject: str, body: str, attachments: list[str]) -> object:
        from apps.mail.services import script_mail_send

        try:
            return script_mail_send(bot=self.bot, to=to, subject=subject, body=body, attachments=attachments)
        except ValueError as exc:  # MailError / MailConfigError: a bad address, a missing attachment...
            raise HostError(f"{keyword}: {exc}") from None

    # -- meetings (apps.meet): BOOK (spec 3.5.11) and START MEET (spec 8.1) ---------------------------
    def book(self, args: list) -> object:
        """BOOK title, description, start, duration_min, location: a meeting room of this bot and its link."""
        from apps.meet.services import MeetError, meeting_book

        if not args or len(args) > 5:
            raise HostError("BOOK takes title, description, start, duration_min, location")
        title, description, start, minutes, location = (list(args) + [None] * 5)[:5]
        try:
            return meeting_book(bot=self.bot, title=title, description=description, start=start,
                                duration_min=minutes, location=location)
        except MeetError as exc:
            raise HostError(f"BOOK: {exc}") from None

    def keyword(self, name: str, args: list, opts: dict) -> object:
        if name == "START MEET":
            from apps.meet.services import MeetError, meeting_start

            if len(args) != 1:
                raise HostError('START MEET takes one room name: START MEET "room"')
            try:
                return meeting_start(bot=self.bot, name=args[0])
            except MeetError as exc:
                raise HostError(f"START MEET: {exc}") from None
        return super().keyword(name, args, opts)


def _table_name(table: str) -> str:
    return str(table).strip().lower()


def _row_update(row: BotTableRow, data: dict) -> bool:
    """Write a row's new data; False when it is gone (a data-subject erasure deletes rows without the table's
    lock: the write then changes nothing instead of failing the script)."""
    return BotTableRow.objects.filter(pk=row.pk).update(data=data, updated_at=timezone.now()) > 0


def _id_text(value: object) -> str | None:
    """A scalar row id as PostgreSQL's `data->>'id'` prints it (None: a row without one). A float is stored
    from its JSON text as a PostgreSQL numeric, printed without exponent and never as a negative zero:
    1e16 reads 10000000000000000, 1e-05 reads 0.00001, -0.0 reads 0.0."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        number = Decimal(json.dumps(value))
        return format(abs(number) if number.is_zero() else number, "f")
    return str(value)


def _json_only(data: dict) -> None:
    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise HostError(f"table rows hold JSON values only: {exc}") from None
    if "\\u0000" in text and contains_nul(data):  # jsonb stores no NUL: a clear error, not a failed INSERT
        raise HostError("table rows cannot hold the NUL character (CHR(0) or \\u0000) in a key or value")
