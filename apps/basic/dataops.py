"""In-memory data transforms of spec 3.5.7, run by the engine (not a host): AGGREGATE, JOIN (three arguments),
PIVOT, GROUP BY, MAP and FILL over arrays of row maps (what FIND, FILTER and JSON give a script).

Each is a pure function of script values. Upstream registers them as keywords of its data crate; the argument
orders are upstream's (`AGGREGATE "SUM", rows, "amount"`, `JOIN left, right, "key"`, `PIVOT rows, "month",
"amount"`, `GROUP BY rows, "field"`, `MAP rows, "old->new, ..."`, `FILL rows, template`); the code is ours.

Choices:
* A field is looked up by its exact name, else case-insensitively (as FILTER does): FIND rows keep the
  table's spelling (`customerName`) while a script's map keys are lower-case.
* Values are compared and grouped by their text (`value_to_text`): 7 and "7" are one key, as upstream's
  string keys.
* AGGREGATE: SUM/AVG/MIN/MAX use the numeric values (numbers and numeric text; others are skipped); COUNT
  counts the rows whose field holds a value (not null, not ""); upstream counted only numeric values, so
  `AGGREGATE "COUNT", companies, "id"` was 0 for text ids. An empty SUM is 0, AVG 0 (upstream), MIN/MAX null
  (upstream's infinities cannot be stored).
* JOIN is an inner join: each left row with each right row of the same key, the left row's fields winning;
  rows in left order, then right order. PIVOT sums the value field per row key (non-numeric values count 0),
  keys in order of first appearance. GROUP BY gives a map from key text to the rows. MAP renames fields
  (the renamed field wins over one already holding the new name); a mapping may also be a map `#{old: "new"}`.
  FILL makes one map per row from the template: `{{field}}` in a text value is replaced by the row's field
  (unknown placeholders stay), other template values are copied.

Limits: inputs and results hold at most `MAX_BUILTIN_ITEMS` rows, like builtins' results (a JOIN is counted
before it is built), and one transform
visits at most `MAX_DATA_STEPS` fields (a BuiltinLimitError, which ends the run like every work bound);
FILL writes at most `MAX_FILL_CHARS` characters.
"""

from __future__ import annotations

import re

from apps.basic import meter
from apps.basic import values as V
from apps.basic.builtins import (
    MAX_BUILTIN_ITEMS,
    MAX_BUILTIN_RESULT_CHARS,
    BuiltinError,
    BuiltinLimitError,
    _parse_number_text,
    value_to_text,
)

# Row fields one transform may visit or write (a JOIN's rows, MAP's renames...): a few hundred milliseconds.
MAX_DATA_STEPS = 5_000_000
# Characters all the texts one FILL writes may hold together.
MAX_FILL_CHARS = 10_000_000

AGGREGATE_OPERATIONS = frozenset({"SUM", "AVG", "AVERAGE", "COUNT", "MIN", "MAX"})

_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")


class _Work:
    """The steps one transform has left."""

    __slots__ = ("name", "left")

    def __init__(self, name: str) -> None:
        self.name = name
        self.left = MAX_DATA_STEPS

    def charge(self, steps: int) -> None:
        # To the running VM's budget too (apps.basic.meter): each call counted as one instruction, so a loop of
        # AGGREGATEs over 100 000 rows ran 14 s under a 1 s limit, and MAP 279 s under 2 s. meter.charge, not
        # charge_steps, which drops the one-row charges most calls make.
        meter.charge(steps)
        self.left -= steps
        if self.left < 0:
            raise BuiltinLimitError(f"{self.name}: more than {MAX_DATA_STEPS} fields to process")


def _rows(name: str, data: object, what: str = "data") -> list:
    """The rows of a transform: an array; one map is one row, null no rows."""
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        if len(data) > MAX_BUILTIN_ITEMS:
            raise BuiltinError(f"{name}: {what} has more than {MAX_BUILTIN_ITEMS} rows")
        return data
    raise BuiltinError(f"{name}: {what} must be an array of rows, got {V.describe(data)}")


def _field(row: object, field: str, work: _Work) -> object:
    """A row's field (exact name, else case-insensitive); None when missing or the row is not a map."""
    return _lookup(row, field, work)[1]


def _lookup(row: object, field: str, work: _Work) -> tuple[bool, object]:
    """(whether the row has the field, its value)."""
    if not isinstance(row, dict):
        return False, None
    if field in row:
        return True, row[field]
    lowered = field.lower()
    if lowered in row:
        return True, row[lowered]
    work.charge(len(row))
    key = meter.key_like(row, lowered)  # the engine's case-insensitive member rule
    return (False, None) if key is None else (True, row[key])


def _key(value: object, work: _Work) -> str:
    return value_to_text(value)  # an array's or map's JSON text is charged by value_to_text itself


def _number(value: object) -> int | float | None:
    """A number for SUM/AVG/MIN/MAX/PIVOT: numbers and numeric text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return _parse_number_text(value)
    return None


def _name(value: object) -> str:
    return value_to_text(value).strip()


def aggregate(operation: object, data: object, field: object) -> object:
    """`AGGREGATE "SUM"|"AVG"|"COUNT"|"MIN"|"MAX", rows, "field"`."""
    op = _name(operation).upper()
    if op not in AGGREGATE_OPERATIONS:
        raise BuiltinError(f"AGGREGATE: unknown operation '{_name(operation)}' (SUM, AVG, COUNT, MIN, MAX)")
    rows, column, work = _rows("AGGREGATE", data), _name(field), _Work("AGGREGATE")
    work.charge(len(rows))
    found = [_field(row, column, work) for row in rows]
    if op == "COUNT":
        return sum(1 for value in found if value is not None and value != "")
    numbers = [n for n in map(_number, found) if n is not None]
    if op in ("MIN", "MAX"):
        return (min(numbers) if op == "MIN" else max(numbers)) if numbers else None
    total: object = 0
    for n in numbers:
        total = V.add(total, n)
    if op == "SUM":
        return total
    return total / len(numbers) if numbers else 0  # type: ignore[operator]


def join(left: object, right: object, key: object) -> list:
    """`JOIN left, right, "key"`: inner join of two arrays of rows on one field."""
    left_rows, right_rows = _rows("JOIN", left, "the left side"), _rows("JOIN", right, "the right side")
    column, work = _name(key), _Work("JOIN")
    work.charge(len(left_rows) + len(right_rows))
    index: dict[str, list[dict]] = {}
    for row in right_rows:
        value = _field(row, column, work)
        if value is not None:
            index.setdefault(_key(value, work), []).append(row)
    pairs: list[tuple[dict, list[dict]]] = []
    count = 0
    for row in left_rows:
        value = _field(row, column, work)
        matches = index.get(_key(value, work)) if value is not None else None
        if matches:
            pairs.append((row, matches))
            count += len(matches)
            if count > MAX_BUILTIN_ITEMS:
                raise BuiltinError(f"JOIN: result would exceed {MAX_BUILTIN_ITEMS} rows")
    result = []
    for row, matches in pairs:
        for match in matches:
            work.charge(len(row) + len(match))
            joined = dict(row)
            for k, v in match.items():
                joined.setdefault(k, v)
            result.append(joined)
    return result


def pivot(data: object, row_field: object, value_field: object) -> list:
    """`PIVOT rows, "row field", "value field"`: the value field summed per row key."""
    rows, key_column, value_column, work = _rows("PIVOT", data), _name(row_field), _name(value_field), _Work("PIVOT")
    work.charge(len(rows))
    sums: dict[str, list] = {}  # key text -> [first key value, sum]
    for row in rows:
        key = _field(row, key_column, work)
        number = _number(_field(row, value_column, work))
        entry = sums.setdefault(_key(key, work), [key, 0])
        entry[1] = V.add(entry[1], number if number is not None else 0)
    return [{key_column: key, value_column: total} for key, total in sums.values()]


def group_by(data: object, field: object) -> dict:
    """`GROUP BY rows, "field"`: a map from each key (as text) to its rows, in order of first appearance."""
    rows, column, work = _rows("GROUP BY", data), _name(field), _Work("GROUP BY")
    work.charge(len(rows))
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(_key(_field(row, column, work), work), []).append(row)
    return groups


def rename(data: object, mapping: object) -> list:
    """`MAP rows, "old->new, old2->new2"` (or a map `#{old: "new"}`): the rows with fields renamed."""
    rows, work = _rows("MAP", data), _Work("MAP")
    renames: dict[str, str] = {}
    if isinstance(mapping, dict):
        renames = {str(k): _name(v) for k, v in mapping.items()}
    else:
        for part in value_to_text(mapping).split(","):
            if not part.strip():
                continue
            old, arrow, new = part.partition("->")
            if not arrow or not old.strip() or not new.strip():
                raise BuiltinError(f"MAP: expected old->new, got '{part.strip()[:80]}'")
            renames[old.strip()] = new.strip()
    lowered = {k.lower(): v for k, v in renames.items()}
    result = []
    for row in rows:
        if not isinstance(row, dict):
            result.append(row)
            continue
        work.charge(len(row) + 1)
        renamed: dict = {}
        for k, v in row.items():
            new = renames.get(k) or lowered.get(str(k).lower())
            if new is None:
                renamed.setdefault(k, v)
            else:
                renamed[new] = v
        result.append(renamed)
    return result


def fill(data: object, template: dict) -> list:
    """`FILL rows, template`: one map per row, `{{field}}` in the template's texts replaced by the row's field."""
    rows, work = _rows("FILL", data), _Work("FILL")
    budget = [MAX_FILL_CHARS]
    result = []
    for row in rows:
        work.charge(len(template) + 1)
        result.append({k: _fill_text(v, row, work, budget) if isinstance(v, str) and "{{" in v else v
                       for k, v in template.items()})
    return result


def _fill_text(text: str, row: object, work: _Work, budget: list[int]) -> str:
    parts: list[str] = []
    size = pos = 0
    for m in _PLACEHOLDER.finditer(text):
        found, value = _lookup(row, m.group(1).strip(), work)
        piece = value_to_text(value) if found else m.group(0)
        parts += (text[pos:m.start()], piece)
        size += m.start() - pos + len(piece)
        if size > MAX_BUILTIN_RESULT_CHARS:
            raise BuiltinError(f"FILL: a filled text would exceed {MAX_BUILTIN_RESULT_CHARS} characters")
        pos = m.end()
    parts.append(text[pos:])
    budget[0] -= size + len(text) - pos
    if budget[0] < 0:
        raise BuiltinLimitError(f"FILL: more than {MAX_FILL_CHARS} characters of filled text")
    return "".join(parts)
