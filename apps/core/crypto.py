"""Encryption at rest: AES-256-GCM envelopes with a key id, bound to the tenant, keys from Vault or a key file.

A value is sealed into an envelope and stored as base64 text:

    byte 0        format version (ENVELOPE_VERSION, 1)
    byte 1        n, the length of the key id (1..64)
    bytes 2..2+n  the key id (ASCII: letters, digits, `_`, `-`, `.`)
    next 12       a random 96-bit nonce (a fresh one per value)
    rest          AES-256-GCM ciphertext followed by its 16-byte tag

The associated data (authenticated, not stored) is the header (version, length, key id) plus the context,
which fields set to the tenant's schema name: a ciphertext copied into another tenant's row, or with its
key id edited, fails to decrypt instead of yielding the plaintext.

Keys: a keyring `{key_id: 32 random bytes}` with one active key (new values are written under it; the
others only decrypt). Where they come from:

* Vault, when VAULT_ADDR is set: the KV v2 secret at ENCRYPTION_VAULT_PATH (`gbo/encryption`) with the
  fields `active_key_id` (a key id) and `keys` (an object `{key_id: base64 of 32 bytes}`, or that object as
  JSON text). Operators add and retire keys in Vault; the platform only reads them (least privilege).
* Otherwise the key file ENCRYPTION_KEY_FILE (`var/keys/encryption.json`, same two fields, mode 0600). The
  development and test settings create it on first use (ENCRYPTION_KEY_FILE_CREATE); any other settings
  refuse to encrypt or decrypt without keys (ImproperlyConfigured) instead of inventing a key that the next
  container would not have.

Failure modes this module prevents:

* Plaintext or keys in logs and errors: messages name the key id, the context and the reason, never a
  value or key material; a failed decryption says only that authentication failed.
* A stale keyring after a rotation elsewhere: the key file is re-read when it changes (inode, size, mtime);
  a value under an unknown key id forces one reload of the keyring (at most every KEYRING_RELOAD_MIN_S),
  so a process that has not seen the new key yet still reads values written with it.
* Nonce reuse: every value gets `os.urandom` nonce of 96 bits; at the NIST bound for random nonces (2^32
  messages per key) rotation is due long before (see apps/core/README.md).
* Half-written key files: the file is created complete under a temporary name and linked into place
  (another process creating it at the same time loses cleanly), updates replace it atomically under a lock.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets as stdlib_secrets
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

# --- format ----------------------------------------------------------------------------------------------

ENVELOPE_VERSION = 1
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size (no extra GHASH pass, the standard random-nonce bound)
TAG_BYTES = 16
KEY_ID_MAX_CHARS = 64
KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # 64 = KEY_ID_MAX_CHARS
# The longest header is 2 + 64 bytes; this many base64 characters (a multiple of 4) always cover it, so a
# header can be read, also in SQL, without decoding a whole value (apps.core.fields.reencrypt).
HEADER_B64_CHARS = 88
_MIN_ENVELOPE_BYTES = 2 + 1 + NONCE_BYTES + TAG_BYTES

# --- policy ----------------------------------------------------------------------------------------------

# A value under a key id this process does not know triggers a reload of the keyring, at most this often:
# often enough that a rotation done elsewhere is picked up at once, rare enough that garbage in a column
# cannot hammer Vault.
KEYRING_RELOAD_MIN_S = 5.0
# Key files are secrets: owner read/write only.
KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700

SOURCE_VAULT, SOURCE_FILE = "vault", "file"


class EncryptionError(Exception):
    """Base class: a value could not be sealed or opened. Messages never carry plaintext or keys."""


class KeysUnavailable(EncryptionError):
    """The keyring could not be read (Vault down or denied, unreadable or malformed key file)."""


class DecryptionError(EncryptionError):
    """A value is not a valid envelope, names an unknown key, or fails authentication (tampered, or copied
    from another tenant or column context)."""


@dataclass(frozen=True)
class Keyring:
    """Keys by id, and the id new values are written under."""

    active_key_id: str
    keys: Mapping[str, bytes]
    source: str = SOURCE_FILE

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeysUnavailable("the keyring holds no keys")
        for key_id, key in self.keys.items():
            _check_key_id(key_id)
            if len(key) != KEY_BYTES:
                raise KeysUnavailable(f"key {key_id!r} is {len(key)} bytes; AES-256 keys are {KEY_BYTES} bytes")
        if self.active_key_id not in self.keys:
            raise KeysUnavailable(f"the active key id {self.active_key_id!r} is not among the keys")

    def __repr__(self) -> str:  # never print key material (tracebacks, debuggers, logs)
        return f"Keyring(active_key_id={self.active_key_id!r}, key_ids={sorted(self.keys)!r}, source={self.source!r})"

    def as_json(self) -> str:
        keys = {key_id: base64.b64encode(key).decode() for key_id, key in sorted(self.keys.items())}
        return json.dumps({"active_key_id": self.active_key_id, "keys": keys}, indent=2) + "\n"


def _check_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise KeysUnavailable(
            f"invalid key id {key_id!r}: 1-{KEY_ID_MAX_CHARS} letters, digits, '_', '-' or '.'"
        )
    return key_id


def key_generate() -> bytes:
    """32 random bytes from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def keyring_parse(data: Mapping[str, Any], *, source: str) -> Keyring:
    """A Keyring from the stored shape `{"active_key_id": id, "keys": {id: base64}}` (`keys` may be JSON
    text, as `vault kv put gbo/encryption keys=@keys.json` stores it). KeysUnavailable names what is wrong."""
    active = data.get("active_key_id")
    raw_keys = data.get("keys")
    if isinstance(raw_keys, str):
        try:
            raw_keys = json.loads(raw_keys)
        except json.JSONDecodeError:
            raise KeysUnavailable(f"{source}: 'keys' is text but not a JSON object") from None
    if not isinstance(active, str) or not isinstance(raw_keys, dict):
        raise KeysUnavailable(f"{source}: expected fields 'active_key_id' (text) and 'keys' (object id -> base64)")
    keys: dict[str, bytes] = {}
    for key_id, encoded in raw_keys.items():
        _check_key_id(key_id)
        try:
            keys[key_id] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise KeysUnavailable(f"{source}: key {key_id!r} is not valid base64") from None
    return Keyring(active_key_id=active, keys=keys, source=SOURCE_VAULT if source.startswith("vault") else SOURCE_FILE)


# --- where the keys live -------------------------------------------------------------------------------------


def key_source() -> str:
    """`vault` when VAULT_ADDR is set, else `file`."""
    return SOURCE_VAULT if getattr(settings, "VAULT_ADDR", "") else SOURCE_FILE


def key_file_path() -> Path:
    configured = getattr(settings, "ENCRYPTION_KEY_FILE", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "keys" / "encryption.json"


def _write_new_file(path: Path, text: str) -> None:
    """Create `path` with `text`, mode 0600, complete or not at all; FileExistsError if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=KEY_DIR_MODE)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".encryption-", suffix=".tmp")
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # atomic create-if-absent with the full content
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _replace_file(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".encryption-", suffix=".tmp")
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _key_file_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file across processes (two rotations at once)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=KEY_DIR_MODE)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def key_file_create(path: Path | None = None) -> bool:
    """Create the key file with one fresh key (`k1`) unless it exists. True when this call created it."""
    path = path or key_file_path()
    keyring = Keyring(active_key_id="k1", keys={"k1": key_generate()})
    try:
        _write_new_file(path, keyring.as_json())
    except FileExistsError:
        return False
    logger.warning("encryption: created the key file %s with a new key k1 (development and tests only)", path)
    return True


def _key_file_read(path: Path) -> Keyring:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeysUnavailable(f"cannot read the key file {path}: {exc.strerror or type(exc).__name__}") from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        logger.warning("encryption: the key file %s has mode %o; it should be 600 (chmod 600)", path, mode)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeysUnavailable(f"the key file {path} is not JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise KeysUnavailable(f"the key file {path} must hold a JSON object")
    return keyring_parse(data, source=f"key file {path}")


def _no_keys_error(path: Path) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"encryption keys are not configured: set VAULT_ADDR (keys at {vault_key_path()}) or provide the key file "
        f"{path} (ENCRYPTION_KEY_FILE); only the development and test settings create one"
    )


def vault_key_path() -> str:
    return getattr(settings, "ENCRYPTION_VAULT_PATH", "") or "gbo/encryption"


def _vault_read(*, fresh: bool) -> Keyring:
    from apps.core.secrets import SecretUnavailable, vault_secrets

    vault = vault_secrets()
    if vault is None:  # VAULT_ADDR was cleared since key_source() looked
        raise KeysUnavailable("Vault is not configured")
    if fresh:
        vault.cache_clear()
    path = vault_key_path()
    try:
        data = vault.read(path)
    except SecretUnavailable as exc:
        raise KeysUnavailable(f"encryption keys at vault {path}: {exc.reason}") from None
    if data is None:
        raise ImproperlyConfigured(
            f"no encryption keys in Vault at {path}: write fields active_key_id and keys (see apps/core/README.md)"
        )
    return keyring_parse(data, source=f"vault {path}")


# --- the process's keyring -----------------------------------------------------------------------------------

_lock = threading.Lock()
_file_cache: tuple[tuple, Keyring] | None = None  # ((path, inode, size, mtime_ns), keyring)
_last_forced_reload = 0.0


def _file_signature(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def keyring_current(*, fresh: bool = False) -> Keyring:
    """The keyring of the configured source (Vault or key file); `fresh` bypasses the caches.

    Raises ImproperlyConfigured when no keys are configured (and the settings may not create a key file),
    KeysUnavailable when they cannot be read.
    """
    global _file_cache
    if key_source() == SOURCE_VAULT:
        return _vault_read(fresh=fresh)
    path = key_file_path()
    signature = _file_signature(path)
    if signature is None:
        if not getattr(settings, "ENCRYPTION_KEY_FILE_CREATE", False):
            raise _no_keys_error(path)
        key_file_create(path)
        signature = _file_signature(path)
    with _lock:
        if not fresh and _file_cache is not None and _file_cache[0] == signature:
            return _file_cache[1]
    keyring = _key_file_read(path)
    with _lock:
        _file_cache = (_file_signature(path), keyring)
    return keyring


def keyring_reset() -> None:
    """Forget the cached keyring (tests; after settings change)."""
    global _file_cache, _last_forced_reload
    with _lock:
        _file_cache, _last_forced_reload = None, 0.0


def _key_for(key_id: str, keyring: Keyring) -> tuple[bytes, Keyring]:
    """The key `key_id`, reloading the keyring once when it is unknown (a rotation done elsewhere)."""
    global _last_forced_reload
    key = keyring.keys.get(key_id)
    if key is not None:
        return key, keyring
    now = time.monotonic()
    with _lock:
        may_reload = now - _last_forced_reload >= KEYRING_RELOAD_MIN_S
        if may_reload:
            _last_forced_reload = now
    if may_reload:
        keyring = keyring_current(fresh=True)
        key = keyring.keys.get(key_id)
        if key is not None:
            return key, keyring
    raise DecryptionError(f"unknown key id {key_id!r} (retired, or not yet visible to this process)")


# --- sealing and opening -------------------------------------------------------------------------------------


def _header(key_id: str) -> bytes:
    encoded = _check_key_id(key_id).encode("ascii")
    return bytes([ENVELOPE_VERSION, len(encoded)]) + encoded


def envelope_header(key_id: str) -> bytes:
    """The leading bytes of every envelope written under `key_id` (version, length, id)."""
    return _header(key_id)


def _associated_data(header: bytes, context: str) -> bytes:
    if not context:
        raise EncryptionError("an encryption context (the tenant schema) is required")
    return header + b"\x00" + context.encode("utf-8")


def encrypt(plaintext: bytes | str, *, context: str, keyring: Keyring | None = None) -> str:
    """Seal `plaintext` under the active key, bound to `context` (the tenant schema); base64 text."""
    keyring = keyring or keyring_current()
    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else bytes(plaintext)
    header = _header(keyring.active_key_id)
    nonce = stdlib_secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(keyring.keys[keyring.active_key_id]).encrypt(nonce, data, _associated_data(header, context))
    return base64.b64encode(header + nonce + sealed).decode("ascii")


def _split(token: str) -> tuple[bytes, str, bytes, bytes]:
    """(header, key_id, nonce, sealed) of an envelope, or DecryptionError saying what is malformed."""
    if not isinstance(token, str | bytes):
        raise DecryptionError(f"expected an encrypted value (text), got {type(token).__name__}")
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("not an encrypted value (not base64)") from None
    if len(raw) < _MIN_ENVELOPE_BYTES:
        raise DecryptionError("not an encrypted value (too short)")
    if raw[0] != ENVELOPE_VERSION:
        raise DecryptionError(f"unsupported envelope version {raw[0]}")
    length = raw[1]
    header_end = 2 + length
    if not 1 <= length <= KEY_ID_MAX_CHARS or len(raw) < header_end + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("not an encrypted value (bad key id length)")
    try:
        key_id = raw[2:header_end].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("not an encrypted value (key id is not ASCII)") from None
    if not KEY_ID_RE.fullmatch(key_id):
        raise DecryptionError("not an encrypted value (malformed key id)")
    nonce_end = header_end + NONCE_BYTES
    return raw[:header_end], key_id, raw[header_end:nonce_end], raw[nonce_end:]


def token_key_id(token: str) -> str:
    """The key id an encrypted value was written under, without decrypting it."""
    return _split(token)[1]


def decrypt(token: str, *, context: str, keyring: Keyring | None = None) -> bytes:
    """Open an envelope written for `context`; DecryptionError when it is malformed, under an unknown
    key, tampered with, or bound to another context (e.g. copied from another tenant)."""
    header, key_id, nonce, sealed = _split(token)
    key, _ = _key_for(key_id, keyring or keyring_current())
    try:
        return AESGCM(key).decrypt(nonce, sealed, _associated_data(header, context))
    except InvalidTag:
        raise DecryptionError(
            f"authentication failed for a value under key {key_id!r} in context {context!r} "
            "(tampered, or written for another tenant)"
        ) from None


def encrypt_text(text: str, *, context: str) -> str:
    return encrypt(text.encode("utf-8"), context=context)


def decrypt_text(token: str, *, context: str) -> str:
    return decrypt(token, context=context).decode("utf-8")


def reencrypt(token: str, *, context: str, keyring: Keyring | None = None) -> str | None:
    """The value sealed again under the active key, or None when it already is (nothing to do)."""
    keyring = keyring or keyring_current()
    if token_key_id(token) == keyring.active_key_id:
        return None
    return encrypt(decrypt(token, context=context, keyring=keyring), context=context, keyring=keyring)


# --- key management (key file; Vault keys are managed in Vault) ----------------------------------------------


def _next_key_id(keyring: Keyring) -> str:
    numbers = [int(key_id[1:]) for key_id in keyring.keys if re.fullmatch(r"k\d{1,9}", key_id)]
    return f"k{max(numbers, default=0) + 1}"


def _file_only(action: str) -> Path:
    if key_source() == SOURCE_VAULT:
        raise ImproperlyConfigured(
            f"cannot {action}: the keys live in Vault at {vault_key_path()}, which the platform only reads; "
            "change active_key_id and keys there (see apps/core/README.md), then re-encrypt"
        )
    return key_file_path()


def keyring_add_key(*, key_id: str | None = None, activate: bool = True) -> str:
    """Add a fresh key to the key file (and make it the active one); returns its id."""
    path = _file_only("add a key")
    with _key_file_lock(path):
        current = keyring_current(fresh=True)
        new_id = _check_key_id(key_id) if key_id else _next_key_id(current)
        if new_id in current.keys:
            raise KeysUnavailable(f"the keyring already has a key {new_id!r}")
        keyring = Keyring(
            active_key_id=new_id if activate else current.active_key_id,
            keys={**current.keys, new_id: key_generate()},
        )
        _replace_file(path, keyring.as_json())
    keyring_reset()
    logger.warning("encryption: added key %s to %s%s", new_id, path, " (now active)" if activate else "")
    return new_id


def keyring_remove_key(key_id: str) -> None:
    """Drop a retired key from the key file. The caller checks that no value uses it any more."""
    path = _file_only("remove a key")
    with _key_file_lock(path):
        current = keyring_current(fresh=True)
        if key_id == current.active_key_id:
            raise KeysUnavailable(f"key {key_id!r} is the active key; rotate to another one first")
        if key_id not in current.keys:
            raise KeysUnavailable(f"the keyring has no key {key_id!r}")
        keys = {k: v for k, v in current.keys.items() if k != key_id}
        _replace_file(path, Keyring(active_key_id=current.active_key_id, keys=keys).as_json())
    keyring_reset()
    logger.warning("encryption: removed key %s from %s", key_id, path)
