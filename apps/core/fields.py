"""Encrypted model fields, and the walk that re-encrypts them after a key rotation.

`EncryptedTextField` (a str) and `EncryptedJSONField` (any JSON value, None stored as SQL NULL when
`null=True`, as Django's JSONField does) seal the value with apps.core.crypto on every write and open it
on every read. The column is `text` holding the base64 envelope (key id, nonce, ciphertext); the
associated data is the tenant's schema name (`connection.schema_name`), or `public` for models of apps
that live only in the public schema, so a value copied into another tenant's row does not decrypt.

Failure modes this module prevents:

* Filtering that silently never matches (each write has a fresh nonce, so equal plaintexts never have equal
  ciphertexts) or that would need the plaintext in SQL: every lookup other than `isnull` raises
  EncryptedLookupError, and the fields refuse `unique`, `db_index` and `primary_key`.
* One unreadable value (a retired key, a row copied from another tenant, tampering) breaking every page,
  and deletes, that load its row (Django's delete collector loads rows, django-tenants listens to every
  delete): it reads as an empty `UndecryptableValue` (a `str`; check with isinstance, `.reason` says why),
  logged at ERROR by table and key id, never content; saving it writes the stored ciphertext back unchanged,
  so nothing is lost and the plaintext is never revealed.
* A rotation leaving values under a retired key: `schema_reencrypt` walks every encrypted column of the
  schema in primary-key order, in batches, each batch one transaction with its rows locked, rewriting only
  values whose key id is not the active one (read from the envelope header in SQL, no decryption), so it is
  idempotent and can stop and resume anywhere; a value that cannot be decrypted is counted and logged by
  table, column and primary key, never by content, and left as it is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from django import forms
from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import connection as default_connection
from django.db import models, transaction
from django_tenants.utils import get_public_schema_name

from apps.core import crypto

logger = logging.getLogger(__name__)

# Rows rewritten per transaction: large enough to amortise round trips, small enough that the row locks
# of one batch are held for milliseconds and a crash redoes little.
REENCRYPT_BATCH_ROWS = 500


class EncryptedLookupError(FieldError):
    """A query tried to filter on the content of an encrypted field."""


class UndecryptableValue(str):
    """Read in place of a stored value that could not be decrypted: empty, with the reason and the original
    ciphertext (written back unchanged if the row is saved)."""

    token: str
    reason: str

    def __new__(cls, token: str, reason: str) -> UndecryptableValue:
        value = super().__new__(cls, "")
        value.token, value.reason = token, reason
        return value

    def __repr__(self) -> str:
        return f"<UndecryptableValue: {self.reason}>"


class EncryptedFieldMixin:
    """What both encrypted fields share: text column, tenant-bound envelope, no lookups but isnull."""

    # What precedes the envelope in the column (see encrypted_fields): nothing, every value is sealed.
    encryption_prefix = ""

    def __init__(self, *args, **kwargs):
        for option in ("unique", "db_index", "primary_key"):
            if kwargs.get(option):
                raise ImproperlyConfigured(
                    f"{type(self).__name__} cannot be {option}: encrypted values differ on every write"
                )
        super().__init__(*args, **kwargs)

    def db_type(self, connection) -> str:
        return "text"

    def rel_db_type(self, connection) -> str:
        return "text"

    def cast_db_type(self, connection) -> str:
        return "text"

    def get_internal_type(self) -> str:
        return "TextField"

    def _refuse(self, name: str) -> EncryptedLookupError:
        return EncryptedLookupError(
            f"{self.model.__name__}.{self.name} is encrypted: filtering on its content ({name!r}) is not possible; "
            "only isnull is supported (filter on another field, or keep a separate keyed hash to search by)"
        )

    def get_lookup(self, lookup_name):
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        raise self._refuse(lookup_name)

    def get_transform(self, name):
        raise self._refuse(name)

    def encryption_context(self, connection) -> str:
        """The associated data: the schema this model's rows live in."""
        if _is_shared_only(self.model):
            return get_public_schema_name()
        schema = getattr(connection, "schema_name", "") or ""
        if not schema:
            raise crypto.EncryptionError("no tenant schema is active: cannot bind an encrypted value to a tenant")
        return schema

    # -- plaintext <-> python, per field type --------------------------------------------------------------
    def _serialize(self, value) -> str:
        raise NotImplementedError

    def _deserialize(self, text: str):
        raise NotImplementedError

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None or hasattr(value, "as_sql"):
            return value
        if isinstance(value, UndecryptableValue):
            return value.token  # keep what is stored; never replace it with an empty value
        return crypto.encrypt(self._serialize(value), context=self.encryption_context(connection))

    def get_db_prep_save(self, value, connection):
        if value is None or hasattr(value, "as_sql"):
            return value
        return self.get_db_prep_value(value, connection, prepared=False)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        context = self.encryption_context(connection)
        try:
            plaintext = crypto.decrypt(value, context=context)
        except crypto.DecryptionError as exc:
            logger.error("encryption: %s.%s has a value that cannot be decrypted in %s: %s",
                         self.model._meta.db_table, self.column, context, exc)
            return UndecryptableValue(value, str(exc))
        return self._deserialize(plaintext.decode("utf-8"))


class EncryptedTextField(EncryptedFieldMixin, models.TextField):
    """A TextField stored encrypted. `""` is encrypted too; only None (with null=True) is stored as NULL."""

    description = "Text (encrypted at rest)"

    def _serialize(self, value) -> str:
        return self.to_python(value)

    def _deserialize(self, text: str) -> str:
        return text


class EncryptedJSONField(EncryptedFieldMixin, models.Field):
    """Any JSON value stored encrypted. With null=True, None is SQL NULL (Django's JSONField semantics)."""

    empty_strings_allowed = False
    description = "A JSON value (encrypted at rest)"
    default_error_messages = {"invalid": "Value must be valid JSON."}

    def __init__(self, *args, encoder=None, decoder=None, **kwargs):
        if encoder and not callable(encoder):
            raise ValueError("The encoder parameter must be a callable object.")
        if decoder and not callable(decoder):
            raise ValueError("The decoder parameter must be a callable object.")
        self.encoder, self.decoder = encoder, decoder
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.encoder is not None:
            kwargs["encoder"] = self.encoder
        if self.decoder is not None:
            kwargs["decoder"] = self.decoder
        return name, path, args, kwargs

    def _serialize(self, value) -> str:
        return json.dumps(value, cls=self.encoder)

    def _deserialize(self, text: str):
        return json.loads(text, cls=self.decoder)

    def validate(self, value, model_instance):
        super().validate(value, model_instance)
        try:
            json.dumps(value, cls=self.encoder)
        except TypeError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None

    def value_to_string(self, obj):
        return self.value_from_object(obj)

    def formfield(self, **kwargs):
        return super().formfield(
            **{"form_class": forms.JSONField, "encoder": self.encoder, "decoder": self.decoder, **kwargs}
        )


# --- which models live where ----------------------------------------------------------------------------------


def _app_names(setting: str) -> set[str]:
    return set(getattr(settings, setting, ()))


def _is_shared_only(model: type[models.Model]) -> bool:
    """A model of an app that lives in the public schema only (never in a tenant's)."""
    name = model._meta.app_config.name
    return name in _app_names("SHARED_APPS") and name not in _app_names("TENANT_APPS")


def encrypted_fields(*, public: bool) -> list[tuple[type[models.Model], models.Field]]:
    """(model, field) for every encrypted column with a table in a tenant schema (or the public one).

    An encrypted column is one whose field has `encryption_prefix` (a str) and `encryption_context(connection)`:
    the fields above, where every value is an envelope, and fields that seal only some values and mark them
    with a prefix before the envelope (apps.sessions.fields: message content when the tenant enables it).
    The walk below reads and rewrites only the values that start with the prefix."""
    wanted = _app_names("SHARED_APPS" if public else "TENANT_APPS")
    found = []
    for model in apps.get_models():
        meta = model._meta
        if meta.proxy or not meta.managed or meta.app_config.name not in wanted:
            continue
        for model_field in meta.concrete_fields:
            if isinstance(getattr(model_field, "encryption_prefix", None), str):
                found.append((model, model_field))
    return sorted(found, key=lambda item: (item[0]._meta.label, item[1].name))


def field_label(model: type[models.Model], model_field: models.Field) -> str:
    return f"{model._meta.label}.{model_field.name}"


# --- re-encryption ---------------------------------------------------------------------------------------------

# The key id of a stored value, read in SQL from the first HEADER_B64_CHARS base64 characters (never the
# whole value): the header bytes, or NULL for anything that is not a well-formed envelope prefix.
_HEADER_SQL = (
    "(CASE WHEN left({col}, {n}) ~ '^[A-Za-z0-9+/]+={{0,2}}$' AND mod(length(left({col}, {n})), 4) = 0 "
    "THEN substring(decode(left({col}, {n}), 'base64') FROM 1 FOR %s) END)"
)
_KEY_ID_SQL = (
    "(CASE WHEN left({col}, {n}) ~ '^[A-Za-z0-9+/]+={{0,2}}$' AND mod(length(left({col}, {n})), 4) = 0 "
    "AND length(decode(left({col}, {n}), 'base64')) >= 2 "
    "THEN substring(decode(left({col}, {n}), 'base64') FROM 3 "
    "FOR get_byte(decode(left({col}, {n}), 'base64'), 1)) END)"
)


@dataclass
class ReencryptReport:
    """What one pass did: rows rewritten, rows that could not be decrypted, where it stopped."""

    schema: str
    rewritten: int = 0
    failed: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    done: bool = True
    # Where to continue when `done` is False: (field label, last primary key done).
    resume_at: tuple[str, object] | None = None

    def as_dict(self) -> dict:
        return {"schema": self.schema, "rewritten": self.rewritten, "failed": self.failed, "fields": self.fields,
                "done": self.done, "resume_at": list(self.resume_at) if self.resume_at else None}


def _names(model: type[models.Model], model_field: models.Field, connection) -> tuple[str, str, str]:
    quote = connection.ops.quote_name
    return quote(model._meta.db_table), quote(model_field.column), quote(model._meta.pk.column)


def _sealed(model_field: models.Field, col: str) -> tuple[str, str, list]:
    """(SQL of the envelope, SQL condition that the value is sealed, its params) for a column."""
    prefix = model_field.encryption_prefix
    if not prefix:
        return col, f"{col} IS NOT NULL", []
    return f"substr({col}, {len(prefix) + 1:d})", f"left({col}, {len(prefix):d}) = %s", [prefix]


def _stale_batch(model, model_field, *, connection, header: bytes, after, limit: int) -> list[tuple]:
    """Up to `limit` (pk, value) rows after `after` whose value is not under the active key; locked."""
    table, col, pk = _names(model, model_field, connection)
    envelope, sealed, params = _sealed(model_field, col)
    stale = _HEADER_SQL.format(col=envelope, n=crypto.HEADER_B64_CHARS)
    sql = f"SELECT {pk}, {col} FROM {table} WHERE {sealed} AND {stale} IS DISTINCT FROM %s"  # noqa: S608
    params += [len(header), header]
    if after is not None:
        sql += f" AND {pk} > %s"
        params.append(after)
    sql += f" ORDER BY {pk} LIMIT %s FOR UPDATE"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def field_reencrypt(
    model, model_field, *, keyring: crypto.Keyring, after=None, deadline: float | None = None,
    batch_rows: int = REENCRYPT_BATCH_ROWS, connection=default_connection,
) -> tuple[int, int, object, bool]:
    """Re-encrypt one column of the current schema under the active key, batch by batch.

    Returns (rewritten, failed, last primary key seen, finished). Stops after the batch during which
    `deadline` (time.monotonic()) passed, with finished False.
    """
    context = model_field.encryption_context(connection)
    header = crypto.envelope_header(keyring.active_key_id)
    table, col, pk = _names(model, model_field, connection)
    prefix = model_field.encryption_prefix
    rewritten = failed = 0
    while True:
        with transaction.atomic(using=connection.alias):
            rows = _stale_batch(model, model_field, connection=connection, header=header, after=after,
                                limit=batch_rows)
            updates = []
            for row_pk, value in rows:
                try:
                    new = crypto.reencrypt(value[len(prefix):], context=context, keyring=keyring)
                except crypto.EncryptionError as exc:
                    failed += 1
                    logger.error("encryption: cannot re-encrypt %s pk=%s in %s: %s",
                                 field_label(model, model_field), row_pk, context, exc)
                    continue
                if new is not None:
                    updates.append((prefix + new, row_pk))
            if updates:
                with connection.cursor() as cursor:
                    cursor.executemany(f"UPDATE {table} SET {col} = %s WHERE {pk} = %s", updates)  # noqa: S608
            rewritten += len(updates)
        if rows:
            after = rows[-1][0]
        if len(rows) < batch_rows:
            return rewritten, failed, after, True
        if deadline is not None and time.monotonic() >= deadline:
            return rewritten, failed, after, False


def schema_reencrypt(*, resume_at: tuple[str, object] | None = None, deadline: float | None = None,
                     batch_rows: int = REENCRYPT_BATCH_ROWS) -> ReencryptReport:
    """Re-encrypt every encrypted column of the current schema (a tenant's, or public's shared models).

    Reads the keyring fresh, so a worker that cached the old one still writes under the new active key.
    `resume_at` continues a pass that stopped at its deadline (see ReencryptReport.resume_at).
    """
    schema = default_connection.schema_name
    public = schema == get_public_schema_name()
    keyring = crypto.keyring_current(fresh=True)
    report = ReencryptReport(schema=schema)
    skipping = resume_at is not None
    for model, model_field in encrypted_fields(public=public):
        label = field_label(model, model_field)
        after = None
        if skipping:
            if label != resume_at[0]:
                continue
            skipping, after = False, resume_at[1]
        rewritten, failed, last, finished = field_reencrypt(
            model, model_field, keyring=keyring, after=after, deadline=deadline, batch_rows=batch_rows
        )
        report.rewritten += rewritten
        report.failed += failed
        report.fields[label] = report.fields.get(label, 0) + rewritten
        if not finished:
            report.done, report.resume_at = False, (label, last)
            break
    logger.info("encryption: re-encrypted %d values in %s under %s (%d failed)%s", report.rewritten, schema,
                keyring.active_key_id, report.failed, "" if report.done else ", to be continued")
    return report


def schema_key_counts() -> dict[str, dict[str, int]]:
    """{field label: {key id: rows}} of the current schema (`?` for values that are not envelopes)."""
    connection = default_connection
    public = connection.schema_name == get_public_schema_name()
    counts: dict[str, dict[str, int]] = {}
    for model, model_field in encrypted_fields(public=public):
        table, col, _ = _names(model, model_field, connection)
        envelope, sealed, params = _sealed(model_field, col)
        key_id = _KEY_ID_SQL.format(col=envelope, n=crypto.HEADER_B64_CHARS)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {key_id} AS key_id, count(*) FROM {table} WHERE {sealed} GROUP BY 1", params  # noqa: S608
            )
            rows = cursor.fetchall()
        per_key: dict[str, int] = {}
        for raw, count in rows:
            name = bytes(raw).decode("ascii", "replace") if raw is not None else "?"
            per_key[name] = per_key.get(name, 0) + count
        if per_key:
            counts[field_label(model, model_field)] = per_key
    return counts


def iter_tenant_schemas() -> Iterator[str]:
    """Every schema that holds tenant data (all tenants, ready or not; never the template)."""
    from django_tenants.utils import get_tenant_model, schema_context

    with schema_context(get_public_schema_name()):
        schemas = list(
            get_tenant_model().objects.exclude(schema_name__in=[get_public_schema_name(), settings.TENANT_BASE_SCHEMA])
            .order_by("schema_name").values_list("schema_name", flat=True)
        )
    yield from schemas
