"""The host interface: every effect a script has on the world goes through one of these methods.

The VM knows nothing about chat sessions, databases, LLMs or mail; it calls a `Host`. The chat
consumer, Celery jobs and tests each provide one. `Host` is the base class: every method raises
`HostError` ("not available on this host") until a subclass implements it, so a host can support a
subset (a scheduled job has no user to HEAR from) and scripts fail with a clear message, not a crash.

`InMemoryHost` implements everything in dicts and lists for tests and the CLI. HTTP goes through
`apps.basic.ssrf` and is refused unless `allow_network=True` (canned responses can be registered).

Values crossing this interface are plain JSON values (None, bool, int, float, str, list, dict).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re

from apps.basic import meter, ssrf
from apps.basic import values as V
from apps.basic.errors import BasicRuntimeError


class HostError(BasicRuntimeError):
    """The host cannot perform a keyword (unsupported here, or the outside call failed)."""


class Host:
    """Base host: override the methods your runtime supports."""

    def _missing(self, what: str) -> HostError:
        return HostError(f"{what} is not available on this host")

    # -- context ---------------------------------------------------------------------------------
    def context(self) -> dict:
        """`{"user": {...}, "session": {...}, "bot": {...}}` for the USER/SESSION/BOT pseudo-variables."""
        return {"user": {}, "session": {}, "bot": {}}

    def session_value(self, path: str) -> object:
        """`GET "session.user_email"` / `"session.id"` / `"user.name"` paths into `context()`."""
        parts = [p for p in path.strip().lower().split(".") if p]
        ctx = self.context()
        if len(parts) == 2 and parts[0] == "session" and parts[1].startswith("user_"):
            user = ctx.get("user") or {}
            if parts[1] in (ctx.get("session") or {}):
                return ctx["session"][parts[1]]
            return user.get(parts[1][len("user_"):])  # session.user_email -> user.email
        node: object = ctx
        for part in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def get_config(self, key: str) -> object:
        raise self._missing("GET config")

    # -- dialog ----------------------------------------------------------------------------------
    def talk(self, text: str) -> None:
        raise self._missing("TALK")

    def talk_to(self, address: str, text: str) -> None:
        raise self._missing("TALK TO")

    def log(self, text: str) -> None:
        """PRINT: server log only (spec 3.5.1 GAP)."""

    def set_system_prompt(self, text: str) -> None:
        raise self._missing("BEGIN SYSTEM PROMPT")

    def set_context(self, name: str | None, value: str) -> None:
        raise self._missing("SET CONTEXT")

    def llm(self, prompt: str) -> str:
        raise self._missing("LLM")

    # -- suggestions -----------------------------------------------------------------------------
    def add_suggestion(self, kind: str, value: str, label: str) -> None:
        """kind: "text" (send value), "context" (select context value), "tool" (run tool value)."""
        raise self._missing("ADD SUGGESTION")

    def clear_suggestions(self) -> None:
        raise self._missing("CLEAR SUGGESTIONS")

    def add_switcher(self, switcher_id: str, label: str) -> None:
        """ADD SWITCHER: a format toggle the user can switch on for the LLM's answers (spec 3.5.5)."""
        raise self._missing("ADD SWITCHER")

    def clear_switchers(self) -> None:
        raise self._missing("CLEAR SWITCHERS")

    # -- knowledge and tools ---------------------------------------------------------------------
    def use_kb(self, name: str) -> None:
        raise self._missing("USE KB")

    def clear_kb(self, name: str | None) -> None:
        raise self._missing("CLEAR KB")

    def think_kb(self, query: str) -> object:
        raise self._missing("THINK KB")

    def use_website(self, url: str, refresh: str | None) -> None:
        raise self._missing("USE WEBSITE")

    def clear_websites(self) -> None:
        raise self._missing("CLEAR WEBSITES")

    def use_tool(self, name: str) -> object:
        """USE TOOL / ADD TOOL; a missing tool is a warning, not an error (spec 3.11 #1)."""
        raise self._missing("USE TOOL")

    def clear_tools(self) -> None:
        raise self._missing("CLEAR TOOLS")

    def call_script(self, name: str, args: list) -> object:
        """CALL "other.bas": run another script of the bot in the same session; returns its RETURN."""
        raise HostError(f"Undefined procedure/script: {name}")

    # -- memory ----------------------------------------------------------------------------------
    def set_bot_memory(self, key: str, value: object) -> None:
        raise self._missing("SET BOT MEMORY")

    def get_bot_memory(self, key: str) -> object:
        raise self._missing("GET BOT MEMORY")

    def set_user_memory(self, key: str, value: object) -> None:
        raise self._missing("SET USER MEMORY")

    def get_user_memory(self, key: str) -> object:
        raise self._missing("GET USER MEMORY")

    def remember(self, key: str, value: object, duration: str | None) -> None:
        raise self._missing("REMEMBER")

    def recall(self, key: str) -> object:
        raise self._missing("RECALL")

    # -- tables ----------------------------------------------------------------------------------
    def find(self, table: str, filter_text: str) -> list:
        raise self._missing("FIND")

    def save(self, table: str, values: list) -> object:
        raise self._missing("SAVE")

    def table_columns(self, table: str) -> tuple[list[str], bool]:
        """The table's known columns for a positional SAVE (`save_row`), and whether they are in the table's
        declared order (a TABLE definition) rather than only known by name (keys of stored rows)."""
        return [], False

    def insert(self, table: str, data: dict) -> object:
        raise self._missing("INSERT")

    def update(self, table: str, filter_text: str, data: dict) -> int:
        raise self._missing("UPDATE")

    def delete(self, table: str, filter_text: str) -> int:
        raise self._missing("DELETE")

    def merge(self, table: str, rows: list, key: str) -> object:
        raise self._missing("MERGE")

    # -- HTTP (the VM has already passed the URL through the SSRF guard) -------------------------
    def http(self, method: str, url: str, data: object, headers: dict) -> object:
        raise self._missing("HTTP requests")

    # -- files -----------------------------------------------------------------------------------
    def read_file(self, path: str) -> object:
        raise self._missing("READ")

    def write_file(self, path: str, content: object, append: bool) -> None:
        raise self._missing("WRITE")

    def list_files(self, path: str) -> list:
        raise self._missing("LIST")

    def copy_file(self, source: str, dest: str) -> None:
        raise self._missing("COPY")

    def move_file(self, source: str, dest: str) -> None:
        raise self._missing("MOVE")

    def delete_file(self, path: str) -> object:
        raise self._missing("DELETE FILE")

    # -- communication, scheduling, tasks --------------------------------------------------------
    def send_mail(self, to: str, subject: str, body: str, attachments: list) -> object:
        raise self._missing("SEND MAIL")

    def send_file(self, to: str | None, path: str, caption: str) -> object:
        raise self._missing("SEND FILE")

    def set_schedule(self, args: list) -> object:
        """Run-time SET SCHEDULE with a computed value (literal ones are compile-time metadata)."""
        raise self._missing("SET SCHEDULE")

    def create_task(self, args: list) -> object:
        raise self._missing("CREATE TASK")

    def book(self, args: list) -> object:
        raise self._missing("BOOK")

    def transfer_to_human(self, reason: str) -> object:
        raise self._missing("TRANSFER TO HUMAN")

    def keyword(self, name: str, args: list, opts: dict) -> object:
        """Every other keyword (multi-agent, social, CRM, media...): implement by name or refuse."""
        raise self._missing(name)


# Longest FIND/FILTER/UPDATE/DELETE filter text: a filter is a few `column=value` conditions; the
# bound keeps even a linear parse of a value built from user input (SPACE(20000)) cheap.
MAX_FILTER_CHARS = 10_000

# One condition's head; the value is the rest of the condition. The value is not matched by the regex
# (`(.*?)\s*$` was quadratic on long runs of spaces: 31 s for a 40 000-character filter).
_CONDITION = re.compile(r"\s*([A-Za-z0-9_]+)\s*(==|!=|<>|>=|<=|=|>|<)")
# Conditions are joined by AND (any case) or commas. The look-behind starts a match only at the first
# space of a run, so a long run of spaces is scanned once, not once per space.
_JOIN = re.compile(r"(?<!\s)\s+AND\s+|,", re.IGNORECASE)

FilterCondition = tuple[str, str, str]  # (column lower-case, operator, value text)


def parse_filter(filter_text: str) -> tuple[FilterCondition, ...]:
    """Parse the FIND filter language upstream accepts: `field=value`, joined by AND (case-insensitive).
    Parse once per keyword, then match each row with `row_matches_filter(row, conditions)`."""
    if not filter_text or not filter_text.strip():
        return ()
    if len(filter_text) > MAX_FILTER_CHARS:
        raise HostError(f"FIND filter longer than {MAX_FILTER_CHARS} characters")
    conditions = []
    for part in _JOIN.split(filter_text):
        m = _CONDITION.match(part)
        value = part[m.end():].strip() if m else ""
        if not m or "\n" in value:
            shown = part.strip()
            raise HostError(f"FIND filter must look like COLUMN=VALUE, not '{shown[:80]}'")
        conditions.append((m.group(1).lower(), m.group(2), value.strip("'\"")))
    return tuple(conditions)


def row_matches_filter(row: dict, filter_text: str | tuple[FilterCondition, ...]) -> bool:
    """Does `row` pass the filter (text, or the conditions `parse_filter` returned)?

    A column's value is compared with the condition's text by the engine's own rules, never turned into text
    with Python's str() (`True` is not "true", 1.0 not "1", and an array nested in itself 24 times was 195 MB
    of text): `=` and `<>` as BASIC's `=` (a number equals numeric text by value, a boolean "true"/"false",
    null ""; an array or map equals no text); `<`, `>`, `<=`, `>=` compare numbers when both sides are
    numbers or numeric text, otherwise the BASIC text of a scalar (an array or map matches none of them)."""
    conditions = parse_filter(filter_text) if isinstance(filter_text, str) else filter_text
    for field, op, want in conditions:
        if field in row:
            value = row[field]
        else:
            key = meter.key_like(row, field)  # column names are case-insensitive
            value = None if key is None else row[key]
        if op in ("=", "=="):
            ok = V.equals(value, want)
        elif op in ("!=", "<>"):
            ok = not V.equals(value, want)
        else:
            ok = _ordered_match(value, op, want)
        if not ok:
            return False
    return True


def _ordered_match(value: object, op: str, want: str) -> bool:
    kind = type(value)
    if kind is list or kind is dict:
        return False
    number = value if kind is int or kind is float else V._numeric_text(value)
    bound = V._numeric_text(want)
    a, b = (number, bound) if number is not None and bound is not None else (V.value_to_text(value), want)
    if op == ">":
        return a > b  # type: ignore[operator]
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == ">=":
        return a >= b  # type: ignore[operator]
    return a <= b  # type: ignore[operator]


def save_is_positional(values: list) -> bool:
    """Is this SAVE's value list the positional form (`SAVE t, v1, v2, ...`), not `SAVE t, id, map` or
    `SAVE t, map`?"""
    return bool(values) and not ((len(values) == 2 and isinstance(values[1], dict))
                                 or (len(values) == 1 and isinstance(values[0], dict)))


def save_row(values: list, names: list | None = None, columns: list[str] | None = None,
             ordered: bool = True) -> dict:
    """The row a SAVE writes: `SAVE t, id, map` (upsert by id), `SAVE t, map`, or positional values.

    Positional values (spec 3.5.7 SAVE form 2): `names` holds, per value, the variable it was written as
    (`email`, or `email` for `lead.email`; None for any other expression) and `columns` the table's known
    columns (`ordered`: in the table's declared order, so positions mean something). A value whose name is a
    column (case-insensitively) goes to that column, spelled as the table spells it. When no name matches a
    column and the columns are ordered, the values fill the columns in order (upstream's run-time form).
    Otherwise an unnamed value takes the column at its own position when that one is free, and a named value
    that matches no column keeps its name as its key: it is stored, not dropped (upstream's compile-time
    rewrite drops it with a warning). With no known columns the names are the keys. Only a value with neither
    a name nor a column is stored as `c<position>` (`c0`, `c1`, ...). Shared by every host's SAVE."""
    if len(values) == 2 and isinstance(values[1], dict):
        return {"id": values[0], **values[1]}
    if len(values) == 1 and isinstance(values[0], dict):
        return dict(values[0])
    names = list(names or [])[: len(values)]
    names += [None] * (len(values) - len(names))
    columns = [str(c) for c in columns or []]
    by_lower = {c.lower(): c for c in reversed(columns)}
    keys: list[str | None] = []
    taken: set[str] = set()  # keys given so far, lower-cased (a row holds one of `Name` and `name`)
    for name in names:
        key = by_lower.get(str(name).lower()) if name else None
        if key is not None and key.lower() in taken:
            key = None  # a column two values name (`SAVE t, a.name, b.name`) goes to the first one
        keys.append(key)
        if key is not None:
            taken.add(key.lower())
    if ordered and columns and not taken:
        keys = [columns[i] if i < len(columns) else None for i in range(len(values))]
        taken = {k.lower() for k in keys if k is not None}
    for i, key in enumerate(keys):
        if key is not None:
            continue
        if names[i]:
            candidate = str(names[i])
        elif ordered and i < len(columns) and columns[i].lower() not in taken:
            candidate = columns[i]
        else:
            candidate = f"c{i}"
        if candidate.lower() in taken:
            candidate = f"c{i}"
            while candidate in taken:
                candidate += "_"
        keys[i] = candidate
        taken.add(candidate.lower())
    return dict(zip(keys, values, strict=True))


# Lines of a TABLE definition that declare no column (SQL-style constraints).
_NOT_COLUMNS = frozenset({"PRIMARY", "FOREIGN", "CONSTRAINT", "UNIQUE", "INDEX", "KEY", "CHECK", "END"})


def table_columns_from_metadata(tables: list | None, table: str) -> list[str]:
    """The columns, in declared order, of `table` in a compiled script's `metadata["tables"]` (its
    `TABLE name ... END TABLE` blocks: `Name string(100)`, `id UUID PRIMARY KEY ...`, `FIELD name AS STRING`);
    [] when the script does not define that table."""
    want = str(table).strip().strip("\"'").lower()
    for entry in tables or []:
        if not isinstance(entry, dict) or "definition" not in entry:
            continue
        header = str(entry.get("definition") or "").split()
        if not header or header[0].strip("\"'").lower() != want:
            continue
        columns: list[str] = []
        for line in entry.get("columns") or []:
            words = str(line).split()
            if words and words[0].upper() == "FIELD":
                words = words[1:]
            if not words or words[0].upper() in _NOT_COLUMNS:
                continue
            column = words[0].strip("\"'`[],")
            if column and column.lower() not in {c.lower() for c in columns}:
                columns.append(column)
        return columns
    return []


class InMemoryHost(Host):
    """Everything in memory: for tests and `manage.py basic run`."""

    # FIND returns at most this many rows, like upstream's LIMIT 10.
    FIND_LIMIT = 10

    def __init__(self, *, user: dict | None = None, session: dict | None = None, bot: dict | None = None,
                 tables: dict[str, list[dict]] | None = None, files: dict[str, object] | None = None,
                 scripts: dict[str, object] | None = None, allow_network: bool = False,
                 http_responses: dict[str, object] | None = None, llm_reply: str = "",
                 config: dict[str, object] | None = None, schemas: dict[str, list[str]] | None = None) -> None:
        self.messages: list[str] = []
        self.direct: list[tuple[str, str]] = []
        self.logs: list[str] = []
        self.suggestions: list[dict] = []
        self.switchers: list[dict] = []
        self.contexts: dict[str, str] = {}
        self.system_prompt: str | None = None
        self.kbs: list[str] = []
        self.websites: list[str] = []
        self.tools: list[str] = []
        self.bot_memory: dict[str, object] = {}
        self.user_memory: dict[str, object] = {}
        self.session_memory: dict[str, object] = {}
        self.tables: dict[str, list[dict]] = tables if tables is not None else {}
        self.schemas: dict[str, list[str]] = schemas or {}  # table -> its columns in order (TABLE definitions)
        self.files: dict[str, object] = files if files is not None else {}
        self.mails: list[dict] = []
        self.schedules: list[list] = []
        self.tasks: list[list] = []
        self.keywords: list[tuple[str, list, dict]] = []
        self.http_log: list[tuple[str, str, object, dict]] = []
        self.scripts = scripts or {}
        self.allow_network = allow_network
        self.http_responses = http_responses or {}
        self.llm_reply = llm_reply
        self.config = config or {}
        self._context = {"user": user or {"id": "user-1", "email": "user@example.com", "name": "Test User"},
                         "session": session or {"id": "session-1"},
                         "bot": bot or {"id": "bot-1", "name": "testbot"}}

    def context(self) -> dict:
        return self._context

    def get_config(self, key: str) -> object:
        return self.config.get(key, "")

    def talk(self, text: str) -> None:
        self.messages.append(text)

    def talk_to(self, address: str, text: str) -> None:
        self.direct.append((address, text))

    def log(self, text: str) -> None:
        self.logs.append(text)

    def set_system_prompt(self, text: str) -> None:
        self.system_prompt = text

    def set_context(self, name: str | None, value: str) -> None:
        key = name or ""
        self.contexts[key] = (self.contexts.get(key, "") + "\n" + value).strip("\n") if not name else value

    def llm(self, prompt: str) -> str:
        return self.llm_reply or f"[llm] {prompt[:200]}"

    def add_suggestion(self, kind: str, value: str, label: str) -> None:
        item = {"kind": kind, "value": value, "text": label}
        if item not in self.suggestions:  # upstream keeps suggestions in a set
            self.suggestions.append(item)

    def clear_suggestions(self) -> None:
        self.suggestions.clear()

    def add_switcher(self, switcher_id: str, label: str) -> None:
        if switcher_id not in [s["id"] for s in self.switchers]:
            self.switchers.append({"id": switcher_id, "label": label})

    def clear_switchers(self) -> None:
        self.switchers.clear()

    def use_kb(self, name: str) -> None:
        if name not in self.kbs:
            self.kbs.append(name)

    def clear_kb(self, name: str | None) -> None:
        self.kbs[:] = [] if name is None else [k for k in self.kbs if k != name]

    def think_kb(self, query: str) -> object:
        return {"results": [], "summary": "", "confidence": 0, "total_results": 0, "sources": []}

    def use_website(self, url: str, refresh: str | None) -> None:
        if url not in self.websites:
            self.websites.append(url)

    def clear_websites(self) -> None:
        self.websites.clear()

    def use_tool(self, name: str) -> object:
        if name not in self.tools:
            self.tools.append(name)
        return f"Tool '{name}' is now available"

    def clear_tools(self) -> None:
        self.tools.clear()

    def call_script(self, name: str, args: list) -> object:
        key = name.lower().removesuffix(".bas")
        if key not in self.scripts:
            raise HostError(f"Undefined procedure/script: {name}")
        result = self.scripts[key]
        return result(args) if callable(result) else result

    def set_bot_memory(self, key: str, value: object) -> None:
        self.bot_memory[key] = "" if value is None else (value if isinstance(value, str) else json.dumps(value))

    def get_bot_memory(self, key: str) -> object:
        return self.bot_memory.get(key, "")

    def set_user_memory(self, key: str, value: object) -> None:
        self.user_memory[key] = value

    def get_user_memory(self, key: str) -> object:
        return self.user_memory.get(key, "")

    def remember(self, key: str, value: object, duration: str | None) -> None:
        self.session_memory[key] = value

    def recall(self, key: str) -> object:
        return self.session_memory.get(key, "")

    def _table(self, table: str) -> list[dict]:
        name = table.strip().lower()
        for key in self.tables:
            if key.lower() == name:
                return self.tables[key]
        return self.tables.setdefault(name, [])

    def table_columns(self, table: str) -> tuple[list[str], bool]:
        name = table.strip().lower()
        for key, columns in self.schemas.items():
            if key.lower() == name:
                return list(columns), True
        for key, rows in self.tables.items():
            if key.lower() == name and rows and isinstance(rows[0], dict):
                return list(rows[0]), False
        return [], False

    def find(self, table: str, filter_text: str) -> list:
        conditions = parse_filter(filter_text)
        rows = [r for r in self._table(table) if row_matches_filter(r, conditions)]
        return copy.deepcopy(rows[: self.FIND_LIMIT])

    def save(self, table: str, values: list) -> object:
        rows = self._table(table)
        row = save_row(values)
        for i, existing in enumerate(rows):
            if "id" in row and existing.get("id") == row["id"]:
                rows[i] = {**existing, **row}
                return {"command": "save", "table": table, "id": row.get("id"), "rows_affected": 1}
        rows.append(row)
        return {"command": "save", "table": table, "id": row.get("id"), "rows_affected": 1}

    def insert(self, table: str, data: dict) -> object:
        rows = self._table(table)
        row = dict(data)
        row.setdefault("id", len(rows) + 1)
        rows.append(row)
        return {"command": "insert", "table": table, "id": row["id"], "success": True}

    def update(self, table: str, filter_text: str, data: dict) -> int:
        count = 0
        conditions = parse_filter(filter_text)
        for row in self._table(table):
            if row_matches_filter(row, conditions):
                row.update(data)
                count += 1
        return count

    def delete(self, table: str, filter_text: str) -> int:
        rows = self._table(table)
        conditions = parse_filter(filter_text)
        keep = [r for r in rows if not row_matches_filter(r, conditions)]
        removed = len(rows) - len(keep)
        rows[:] = keep
        return removed

    def merge(self, table: str, rows: list, key: str) -> object:
        inserted = updated = 0
        existing = self._table(table)
        for item in rows or []:
            match = next((r for r in existing if r.get(key) == item.get(key)), None)
            if match is None:
                existing.append(dict(item))
                inserted += 1
            else:
                match.update(item)
                updated += 1
        return {"inserted": inserted, "updated": updated}

    def http(self, method: str, url: str, data: object, headers: dict) -> object:
        self.http_log.append((method, url, data, dict(headers)))
        if url in self.http_responses:
            return copy.deepcopy(self.http_responses[url])
        if not self.allow_network:
            raise HostError(f"network access is disabled in this host ({method} {url})")
        try:
            return ssrf.fetch(method, url, data, headers)
        except ssrf.SSRFError as exc:
            raise HostError(f"{method} {url} refused: {exc}") from None
        except OSError as exc:
            raise HostError(f"HTTP request failed: {exc}") from None

    def read_file(self, path: str) -> object:
        if path not in self.files:
            raise HostError(f"File not found: {path}")
        return copy.deepcopy(self.files[path])

    def write_file(self, path: str, content: object, append: bool) -> None:
        if append and isinstance(self.files.get(path), str):
            self.files[path] = str(self.files[path]) + str(content)
        else:
            self.files[path] = content

    def list_files(self, path: str) -> list:
        prefix = path.rstrip("/") + "/" if path else ""
        return [{"name": p.rsplit("/", 1)[-1], "path": p, "size": len(str(v)), "is_dir": False}
                for p, v in sorted(self.files.items()) if p.startswith(prefix) or fnmatch.fnmatch(p, path)]

    def copy_file(self, source: str, dest: str) -> None:
        self.files[dest] = copy.deepcopy(self.read_file(source))

    def move_file(self, source: str, dest: str) -> None:
        self.files[dest] = self.read_file(source)
        del self.files[source]

    def delete_file(self, path: str) -> object:
        if path not in self.files:
            return f"File not found: {path}"
        del self.files[path]
        return True

    def send_mail(self, to: str, subject: str, body: str, attachments: list) -> object:
        self.mails.append({"to": to, "subject": subject, "body": body, "attachments": attachments})
        return True

    def send_file(self, to: str | None, path: str, caption: str) -> object:
        self.keywords.append(("SEND FILE", [to, path, caption], {}))
        return True

    def set_schedule(self, args: list) -> object:
        self.schedules.append(args)
        return True

    def create_task(self, args: list) -> object:
        self.tasks.append(args)
        return {"task_id": len(self.tasks), "status": "created"}

    def book(self, args: list) -> object:
        self.keywords.append(("BOOK", args, {}))
        return {"status": "booked"}

    def transfer_to_human(self, reason: str) -> object:
        self.keywords.append(("TRANSFER TO HUMAN", [reason], {}))
        return True

    def keyword(self, name: str, args: list, opts: dict) -> object:
        raise HostError(f"{name} is not available on this host")
