"""Encryption envelopes (AES-256-GCM, key id, tenant as associated data) and where keys come from: a key
file (created 0600 in dev/test only) or Vault (our own Vault-API server on loopback, through hvac).

No database here: sealing and opening values never touches it."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.core import crypto
from apps.core import secrets as secrets_module
from tests.support.vault_fake import FakeVault

ROOT = Path(__file__).resolve().parents[2]
PLAINTEXT = "canary-plaintext-5d1f-the-memory-of-alpha"


@pytest.fixture
def key_file(settings, tmp_path):
    """An empty key directory of the test's own, creation allowed (dev/test behaviour), no Vault."""
    settings.ENCRYPTION_KEY_FILE = tmp_path / "keys" / "encryption.json"
    settings.ENCRYPTION_KEY_FILE_CREATE = True
    settings.VAULT_ADDR = ""
    crypto.keyring_reset()
    yield settings.ENCRYPTION_KEY_FILE
    crypto.keyring_reset()


def _raw(token: str) -> bytes:
    return base64.b64decode(token)


def _key_material(path: Path) -> list[str]:
    return list(json.loads(path.read_text())["keys"].values())


# --- the envelope ------------------------------------------------------------------------------------------------


def test_envelope_has_version_key_id_and_a_fresh_96_bit_nonce(key_file):
    first = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    second = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    raw = _raw(first)
    assert raw[0] == crypto.ENVELOPE_VERSION == 1
    assert raw[1] == 2 and raw[2:4] == b"k1"
    assert crypto.token_key_id(first) == "k1"
    assert raw[4:16] != _raw(second)[4:16], "each value gets its own nonce"
    assert first != second
    assert len(raw) == 4 + 12 + len(PLAINTEXT.encode()) + 16
    assert PLAINTEXT.encode() not in raw
    assert crypto.decrypt_text(first, context="t_alpha") == PLAINTEXT


def test_a_value_bound_to_one_tenant_does_not_decrypt_for_another(key_file):
    token = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    with pytest.raises(crypto.DecryptionError, match="authentication failed.*t_bravo"):
        crypto.decrypt(token, context="t_bravo")


@pytest.mark.parametrize("position", [0, 1, 3, 10, -1])
def test_any_altered_byte_is_refused(key_file, position):
    raw = bytearray(_raw(crypto.encrypt_text(PLAINTEXT, context="t_alpha")))
    raw[position] ^= 0x01
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(base64.b64encode(bytes(raw)).decode(), context="t_alpha")


@pytest.mark.parametrize(
    ("token", "message"),
    [("not base64 at all!", "not base64"), (base64.b64encode(b"\x01\x02k1").decode(), "too short"),
     (base64.b64encode(b"\x07\x02k1" + bytes(40)).decode(), "unsupported envelope version 7"),
     (base64.b64encode(b"\x01\x00" + bytes(40)).decode(), "bad key id length")],
)
def test_malformed_values_are_named(key_file, token, message):
    with pytest.raises(crypto.DecryptionError, match=message):
        crypto.decrypt(token, context="t_alpha")


def test_an_empty_context_is_refused(key_file):
    with pytest.raises(crypto.EncryptionError, match="context"):
        crypto.encrypt_text(PLAINTEXT, context="")


# --- the key file --------------------------------------------------------------------------------------------------


def test_key_file_is_created_on_first_use_with_mode_0600(key_file):
    assert not key_file.exists()
    crypto.encrypt_text("x", context="t_alpha")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    data = json.loads(key_file.read_text())
    assert data["active_key_id"] == "k1" and len(base64.b64decode(data["keys"]["k1"])) == 32


def test_concurrent_first_uses_create_one_key_file(key_file):
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda _: crypto.key_file_create(key_file), range(8)))
    assert created.count(True) == 1
    assert not [p for p in key_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_without_keys_and_without_permission_to_create_them_nothing_is_encrypted(key_file, settings):
    settings.ENCRYPTION_KEY_FILE_CREATE = False
    with pytest.raises(ImproperlyConfigured, match="VAULT_ADDR.*ENCRYPTION_KEY_FILE"):
        crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    assert not key_file.exists()


def test_production_settings_do_not_create_key_files():
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "gbplatform.settings.prod", "DJANGO_SECRET_KEY": "x" * 60,
                "DATABASE_URL": "postgresql://u:p@db.example.com/x", "REDIS_URL": "redis://cache.example.com:6379/0",
                "ALLOWED_HOSTS": ".bots.example.com"})
    code = "import django; django.setup(); from django.conf import settings; print(settings.ENCRYPTION_KEY_FILE_CREATE)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not JSON"), ('{"active_key_id": "k1"}', "expected fields"),
     ('{"active_key_id": "k9", "keys": {"k1": "' + base64.b64encode(bytes(32)).decode() + '"}}', "not among"),
     ('{"active_key_id": "k1", "keys": {"k1": "c2hvcnQ="}}', "5 bytes"),
     ('{"active_key_id": "k 1", "keys": {"k 1": "' + base64.b64encode(bytes(32)).decode() + '"}}', "invalid key id")],
)
def test_a_malformed_key_file_is_named_and_never_echoed(key_file, content, message):
    key_file.parent.mkdir(parents=True)
    key_file.write_text(content)
    with pytest.raises(crypto.KeysUnavailable, match=message) as caught:
        crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    assert base64.b64encode(bytes(32)).decode() not in str(caught.value)


def test_rotation_writes_under_the_new_key_and_still_reads_the_old(key_file):
    old = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    assert crypto.keyring_add_key() == "k2"
    new = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    assert crypto.token_key_id(new) == "k2" and crypto.token_key_id(old) == "k1"
    assert crypto.decrypt_text(old, context="t_alpha") == PLAINTEXT
    rewrapped = crypto.reencrypt(old, context="t_alpha")
    assert crypto.token_key_id(rewrapped) == "k2" and crypto.reencrypt(rewrapped, context="t_alpha") is None
    with pytest.raises(crypto.KeysUnavailable, match="active key"):
        crypto.keyring_remove_key("k2")
    crypto.keyring_remove_key("k1")
    assert crypto.decrypt_text(rewrapped, context="t_alpha") == PLAINTEXT
    with pytest.raises(crypto.DecryptionError, match="unknown key id 'k1'"):
        crypto.decrypt(old, context="t_alpha")


def test_a_key_added_by_another_process_is_picked_up_for_reading(key_file):
    crypto.encrypt_text("warm the cache", context="t_alpha")
    cached = crypto.keyring_current()
    other = crypto.Keyring(active_key_id="k7", keys={**cached.keys, "k7": crypto.key_generate()})
    token = crypto.encrypt(PLAINTEXT, context="t_alpha", keyring=other)  # written elsewhere
    key_file.write_text(other.as_json())  # the other process's update, not seen by our cache yet
    assert crypto.decrypt_text(token, context="t_alpha") == PLAINTEXT


def test_keyring_repr_never_shows_key_material(key_file):
    crypto.encrypt_text("x", context="t_alpha")
    keyring = crypto.keyring_current()
    assert all(base64.b64encode(k).decode() not in repr(keyring) and str(k) not in repr(keyring)
               for k in keyring.keys.values())


def test_neither_plaintext_nor_keys_are_logged(key_file, caplog):
    caplog.set_level(logging.DEBUG)
    token = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    crypto.decrypt_text(token, context="t_alpha")
    crypto.keyring_add_key()
    crypto.reencrypt(token, context="t_alpha")
    errors = []
    for context in ("t_bravo", "t_alpha"):
        try:
            crypto.decrypt(token[:-8] + "AAAAAAA=" if context == "t_alpha" else token, context=context)
        except crypto.DecryptionError as exc:
            errors.append(str(exc))
    assert len(errors) == 2
    logging.getLogger("test").error("failure: %s", errors)  # what a caller would log
    text = caplog.text + " ".join(errors)
    assert caplog.records, "the key-file creation and rotation are logged"
    assert PLAINTEXT not in text
    for secret in _key_material(key_file):
        assert secret not in text


# --- Vault ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def vault_keys(settings, key_file):
    secrets_module.secrets_reset()
    with FakeVault() as fake:
        settings.VAULT_ADDR = fake.url
        settings.VAULT_TOKEN = fake.create_token(0)
        settings.VAULT_TIMEOUT_S = 1.0
        crypto.keyring_reset()
        yield fake
    secrets_module.secrets_reset()
    crypto.keyring_reset()


def _vault_keyring(fake: FakeVault, active: str, keys: dict[str, bytes], *, as_text: bool = False) -> None:
    encoded = {key_id: base64.b64encode(key).decode() for key_id, key in keys.items()}
    fake.put_secret("gbo/encryption", {"active_key_id": active, "keys": json.dumps(encoded) if as_text else encoded})


@pytest.mark.parametrize("as_text", [False, True])
def test_keys_come_from_vault_when_it_is_configured(vault_keys, key_file, as_text):
    key = crypto.key_generate()
    _vault_keyring(vault_keys, "2026-11", {"2026-11": key}, as_text=as_text)
    token = crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    assert crypto.token_key_id(token) == "2026-11"
    assert crypto.keyring_current().source == crypto.SOURCE_VAULT
    assert not key_file.exists(), "no key file when Vault holds the keys"
    assert crypto.decrypt(token, context="t_alpha", keyring=crypto.Keyring("2026-11", {"2026-11": key})) == \
        PLAINTEXT.encode()


def test_missing_keys_in_vault_are_a_configuration_error(vault_keys):
    with pytest.raises(ImproperlyConfigured, match="no encryption keys in Vault at gbo/encryption"):
        crypto.encrypt_text(PLAINTEXT, context="t_alpha")


def test_vault_down_means_no_encryption_not_a_fallback(vault_keys, key_file):
    vault_keys.outage_status = 503
    with pytest.raises(crypto.KeysUnavailable, match="vault gbo/encryption"):
        crypto.encrypt_text(PLAINTEXT, context="t_alpha")
    assert not key_file.exists()


def test_a_rotation_in_vault_is_seen_by_a_process_holding_the_old_keyring(vault_keys):
    k1, k2 = crypto.key_generate(), crypto.key_generate()
    _vault_keyring(vault_keys, "k1", {"k1": k1})
    crypto.encrypt_text("warm", context="t_alpha")  # caches k1-only for VAULT_CACHE_TTL_S
    token = crypto.encrypt(PLAINTEXT, context="t_alpha", keyring=crypto.Keyring("k2", {"k1": k1, "k2": k2}))
    _vault_keyring(vault_keys, "k2", {"k1": k1, "k2": k2})
    assert crypto.decrypt_text(token, context="t_alpha") == PLAINTEXT


def test_keys_in_vault_are_not_changed_by_the_platform(vault_keys):
    _vault_keyring(vault_keys, "k1", {"k1": crypto.key_generate()})
    with pytest.raises(ImproperlyConfigured, match="only reads"):
        crypto.keyring_add_key()
