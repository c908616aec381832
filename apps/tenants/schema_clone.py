"""Fast cloning of the template schema into a new tenant schema.

django-tenants' general clone function inspects the catalog in ways that grow with the number of schemas
(2 s per tenant at 100 tenants, measured). Our template holds only what Django migrations make: tables
with identity columns, constraints and indexes. Those are copied here with a handful of catalog queries
filtered by namespace, so creation stays flat as tenants accumulate. Triggers on those tables are
copied too (their functions must live outside the template, e.g. in public). Anything else in the
template (views, functions in the template schema, free-standing sequences) raises TemplateNotCloneable
and the caller falls back to the general clone, trading speed for completeness.

Names are kept exactly (constraints, indexes, identity sequences): later migrations address them by name.
Definitions are read with the template alone on search_path, so they come back unqualified and are
replayed with the new schema alone on search_path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import connection, transaction
from psycopg import sql


class TemplateNotCloneable(Exception):
    """The template holds an object kind this cloner does not copy."""


# Rows that describe the schema rather than the tenant's data: which migrations are applied, and the
# content types and permissions that post_migrate made for them. Copying them is what a fresh migrate
# would have produced, without running it.
REFERENCE_TABLES = ("django_migrations", "django_content_type", "auth_permission")

# Constraint kinds replayed with ALTER TABLE ... ADD CONSTRAINT, in an order that satisfies dependencies:
# primary keys and unique constraints before the foreign keys that reference them. NOT NULL comes with LIKE.
CONSTRAINT_ORDER = ("p", "u", "x", "c", "f")


def _unsupported_objects(cursor, template: str) -> list[str]:
    cursor.execute(
        """
        SELECT c.relname || ' (' || c.relkind::text || ')' FROM pg_class c
        WHERE c.relnamespace = %(ns)s::regnamespace AND c.relkind NOT IN ('r', 'i', 'S')
        UNION ALL
        SELECT 'sequence ' || c.relname FROM pg_class c
        WHERE c.relnamespace = %(ns)s::regnamespace AND c.relkind = 'S'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i')
        UNION ALL
        SELECT 'function ' || p.proname FROM pg_proc p WHERE p.pronamespace = %(ns)s::regnamespace
        UNION ALL
        SELECT 'type ' || t.typname FROM pg_type t
        WHERE t.typnamespace = %(ns)s::regnamespace AND t.typtype IN ('e', 'd', 'r', 'm')
        """,
        {"ns": template},
    )
    return [row[0] for row in cursor.fetchall()]


def _definitions(cursor, template: str) -> tuple[list[str], list[tuple[str, str, str]], list[str], list[str]]:
    cursor.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'r' ORDER BY relname",
        [template],
    )
    tables = [row[0] for row in cursor.fetchall()]
    cursor.execute(
        """
        SELECT c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
        WHERE con.connamespace = %s::regnamespace AND con.contype IN ('p', 'u', 'x', 'c', 'f')
        """,
        [template],
    )
    ordered = sorted(cursor.fetchall(), key=lambda row: (CONSTRAINT_ORDER.index(row[2]), row[0], row[1]))
    constraints = [(table, name, definition) for table, name, _kind, definition in ordered]
    cursor.execute(
        """
        SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = %s::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
        ORDER BY c.relname
        """,
        [template],
    )
    indexes = [row[0] for row in cursor.fetchall()]
    cursor.execute(
        """
        SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %s::regnamespace AND NOT t.tgisinternal ORDER BY t.tgname
        """,
        [template],
    )
    triggers = [row[0] for row in cursor.fetchall()]
    return tables, constraints, indexes, triggers


def _retarget(definition: str, template: str, target: str) -> str:
    """pg_get_indexdef and pg_get_triggerdef always schema-qualify the table ("... ON tenant_template.t
    ..."): point the definition at the new schema. The index or trigger lives in the schema of its table."""
    pattern = re.compile(rf" ON (ONLY )?{re.escape(_quote(template))}\.")
    retargeted, count = pattern.subn(lambda m: f" ON {m.group(1) or ''}{_quote(target)}.", definition, count=1)
    if count != 1:
        raise TemplateNotCloneable(f"unexpected definition: {definition[:120]}")
    return retargeted


def _copy_rows(cursor, template: str, table: str) -> None:
    cursor.execute(
        sql.SQL("INSERT INTO {} SELECT * FROM {}.{}").format(
            sql.Identifier(table), sql.Identifier(template), sql.Identifier(table)
        )
    )
    # Identity sequences are the clone's own and start at 1: move them past the copied ids.
    cursor.execute(
        sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), coalesce(max(id), 0) + 1, false) FROM {}").format(
            sql.Literal(table), sql.Identifier(table)
        )
    )


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TemplatePlan:
    tables: list[str]
    constraints: list[tuple[str, str, str]]
    indexes: list[str]
    # Triggers on the template's tables (their functions live outside the template, e.g. in public).
    triggers: list[str]


# Reading the definitions scans catalogs that grow with every tenant (pg_class, pg_constraint and pg_type
# have no index on the namespace alone), so they are read once per template state and reused. The state is
# the template's migration records: the template only changes when a migration is applied to it.
_plan_cache: dict[tuple, TemplatePlan] = {}


def _template_state(cursor, template: str) -> tuple:
    cursor.execute(
        sql.SQL("SELECT count(*), max(id), max(applied) FROM {}.django_migrations").format(sql.Identifier(template))
    )
    return (connection.settings_dict["NAME"], template, *cursor.fetchone())


def _template_plan(cursor, template: str) -> TemplatePlan:
    state = _template_state(cursor, template)
    plan = _plan_cache.get(state)
    if plan is None:
        unsupported = _unsupported_objects(cursor, template)
        if unsupported:
            raise TemplateNotCloneable(", ".join(unsupported[:5]))
        cursor.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(template)))
        plan = TemplatePlan(*_definitions(cursor, template))
        _plan_cache.clear()
        _plan_cache[state] = plan
    return plan


def template_plan_forget() -> None:
    """Drop the cached definitions (after changing the template other than by a migration)."""
    _plan_cache.clear()


def schema_clone(template: str, target: str) -> None:
    """Create schema `target` with the structure (no rows) of `template`, in one transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        plan = _template_plan(cursor, template)
        tables, constraints, indexes = plan.tables, plan.constraints, plan.indexes
        cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target)))
        cursor.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(target)))
        for table in tables:
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {}.{} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED "
                    "INCLUDING STORAGE INCLUDING COMMENTS)"
                ).format(sql.Identifier(table), sql.Identifier(template), sql.Identifier(table))
            )
        for table, name, definition in constraints:
            # `definition` comes from pg_get_constraintdef of our own template, not from user input.
            cursor.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(sql.Identifier(table), sql.Identifier(name))
                + sql.SQL(definition)  # noqa: S608
            )
        for definition in indexes:
            cursor.execute(sql.SQL(_retarget(definition, template, target)))
        for table in (t for t in REFERENCE_TABLES if t in tables):
            _copy_rows(cursor, template, table)
        # Triggers last: the reference rows above are copies, not events a trigger should see.
        for definition in plan.triggers:
            cursor.execute(sql.SQL(_retarget(definition, template, target)))
        # Check the copied rows' deferred foreign keys now, not at commit: no trigger events stay pending
        # (they would block a DROP in the same transaction, and a bad copy should fail here, loudly).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # django-tenants sets search_path again on the next cursor; this only ends our override early.
        cursor.execute("SET LOCAL search_path TO DEFAULT")
