"""A bot's LLM settings: its provider chain, limits, breaker and cache policy (spec §2.4.2, §7.1, §7.7).

`llm_settings_for(bot, config_values)` reads the bot's config.csv values once and returns a frozen
`LLMSettings`; nothing here talks to a provider.

Failure modes this module prevents:

* A bot author reading another tenant's (or the platform's) secret: an `llm-key` written as
  `vault:<path>#<key>` is resolved by `bot_config_secret_value` for the current tenant and bot, so a path
  outside `gbo/orgs/<tenant>/bots/<bot>` and `gbo/tenants/<tenant>` is refused, and so is the tenant admins'
  own `gbo/tenants/<tenant>/admin` (an editor naming the OIDC client secret as the key of a URL they chose).
* The platform's key leaking to an endpoint a bot author chose: a bot with its own `llm-url` gets only
  its own `llm-key`, never `LLM_API_KEY`.
* Keys in logs: `ProviderConfig.api_key` is left out of `repr`, and problems name the config key, never
  the value.
* A bot author aiming the platform's HTTP client at its own network (SSRF: cloud metadata, internal
  services): URLs from config.csv (`llm-url`, `llm-server`, `llm-fallback-url`) must be public hosts,
  checked with the HTTP keywords' guard (apps.basic.ssrf), unless the operator sets
  LLM_ALLOW_PRIVATE_HOSTS (local models on a private network). The platform's own LLM_URL is trusted.
  The check is made again when connecting: such a provider is `public_only`, and its client connects only to
  an address checked in the same resolution (apps.core.outbound), so a name answering a public address
  here and 127.0.0.1 to the connection (DNS rebinding) is refused.
* Vault being down quietly moving a bot onto the platform's provider: when a `vault:` key cannot be read
  (as opposed to "not there"), the platform default is left out of that bot's chain.
* One bad value (a typo in `circuit-breaker-threshold`, an unreadable fallback key) stopping every chat:
  it falls back to the default or drops that one provider, and says so in `LLMSettings.problems`.

Provider chain (first that answers wins, see apps.llm.services): the bot's provider, then
`llm-fallback-*` (or `fallback-llm-*`), then the models named by `model-fallback-order` on the bot's
endpoint, then the platform default (`LLM_PROVIDER`, `LLM_URL`, `LLM_MODEL`, `LLM_API_KEY`); duplicates
are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings

from apps.bots.config_csv import config_is_secret_reference, config_lookup

if TYPE_CHECKING:
    from apps.core.secrets import AdminSecretReferences

logger = logging.getLogger(__name__)

KIND_OPENAI = "openai"  # any OpenAI-compatible chat-completions API, through the `openai` SDK
KIND_ANTHROPIC = "anthropic"  # Anthropic's messages API, through the `anthropic` SDK

# Names accepted in `llm-provider` / `llm-fallback-provider` for the OpenAI-compatible API.
OPENAI_COMPATIBLE_NAMES = frozenset({
    "openai", "openai-compatible", "groq", "ollama", "llamacpp", "llama.cpp", "llama-cpp", "vllm", "local",
    "deepseek", "mistral", "nvidia", "nim", "cerebras", "xai", "together", "openrouter", "lmstudio",
    "glm", "zai", "z.ai", "gemini", "azure", "azure-openai",
})
ANTHROPIC_NAMES = frozenset({"anthropic", "claude"})
# Upstream has native clients for these; we do not. They can be reached through an OpenAI-compatible
# gateway (LiteLLM, their own compatibility endpoints) by naming it `openai`.
UNSUPPORTED_NAMES = frozenset({"bedrock", "aws-bedrock", "vertex", "vertexai", "azure-responses", "azuregpt5"})
# Where a named public provider lives when the bot gives a key but no URL.
PUBLIC_PROVIDER_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "claude": "https://api.anthropic.com",
    "groq": "https://api.groq.com/openai/v1",
}

# --- policy defaults (each overridable per bot where a config key exists) --------------------------------

# Spec §7.2: upstream's HTTP timeout. A streamed answer from a slow local model can take minutes; this is
# the read timeout between bytes, and connecting gets its own short limit.
DEFAULT_TIMEOUT_S = 180.0
# Retries after a retryable failure (connection, timeout, 408/409/429, 5xx) before the next provider: two
# ride out a restart or a rate-limit blip without multiplying a real outage's delay by much.
DEFAULT_MAX_RETRIES = 2
# First backoff; doubles per retry (with jitter) up to apps.llm.providers.RETRY_MAX_DELAY_S.
DEFAULT_RETRY_BASE_DELAY_S = 0.5
# circuit-breaker-threshold: consecutive failed calls that open a provider's breaker. Five tolerates a
# few unlucky requests; more would keep users waiting on a dead provider for longer.
DEFAULT_BREAKER_THRESHOLD = 5
BREAKER_THRESHOLD_MAX = 100
# circuit-breaker-timeout: seconds a breaker stays open before one probe request is let through.
DEFAULT_BREAKER_TIMEOUT_S = 30.0
BREAKER_TIMEOUT_MAX_S = 3600.0
# llm-cache (upstream code default true), llm-cache-ttl (3600 s), llm-cache-semantic (code default false),
# llm-cache-threshold (0.95: "strict" in the docs; lower values start matching different questions).
DEFAULT_CACHE_ENABLED = True
DEFAULT_CACHE_TTL_S = 3600
CACHE_TTL_MAX_S = 7 * 24 * 3600  # a week: cached answers must not outlive the content they came from by much
DEFAULT_CACHE_SEMANTIC = False
DEFAULT_CACHE_THRESHOLD = 0.95
CACHE_THRESHOLD_MIN = 0.5  # below this, "similar" is meaningless for MiniLM sentence vectors
# Output cap bounds: llm-max-tokens outside them is refused (typo guard), the default being no cap sent
# (the server's own) for OpenAI-compatible APIs; Anthropic requires one.
MAX_TOKENS_LIMIT = 1_000_000
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class ProviderConfig:
    """One endpoint + model + credential of a chain. `api_key` never appears in repr or logs."""

    kind: str
    label: str  # the provider's name for people: "groq", "anthropic", "platform"
    base_url: str  # what the SDK gets (the OpenAI SDK appends /chat/completions, Anthropic's /v1/messages)
    model: str
    source: str  # "bot", "fallback", "model-fallback-order", "platform"
    api_key: str = field(default="", repr=False)
    # Used with the platform's credential (or none): every tenant calling it shares its breaker, so the
    # breaker takes the platform's threshold and timeout, never one bot's (apps.llm.breaker).
    shared: bool = False
    # A URL the bot chose, checked as a public host (private hosts not allowed): connect only to addresses checked
    # in the same resolution (apps.core.outbound), never to what the name resolves to later (DNS rebinding).
    public_only: bool = False

    @property
    def breaker_id(self) -> str:
        """The breaker's identity: endpoint, model and credential (a hash: one tenant's rate-limited key
        must not open the breaker of another tenant using the same endpoint with its own key)."""
        digest = hashlib.sha256(f"{self.kind}\n{self.base_url}\n{self.model}\n{self.api_key}".encode())
        return digest.hexdigest()[:24]

    def describe(self) -> str:
        """For logs and error reasons: no key, and no credentials a URL might carry (`user:pass@host`)."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        where = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        return f"{self.label} model {self.model} at {where}"

    def same_target(self, other: ProviderConfig) -> bool:
        return (self.kind, self.base_url, self.model, self.api_key) == (
            other.kind, other.base_url, other.model, other.api_key)


@dataclass(frozen=True)
class LLMSettings:
    """Everything a chat or completion call needs; built by `llm_settings_for`, replaceable in tests."""

    tenant: str
    bot_id: str
    bot_name: str
    providers: tuple[ProviderConfig, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_base_delay_s: float = DEFAULT_RETRY_BASE_DELAY_S
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    breaker_timeout_s: float = DEFAULT_BREAKER_TIMEOUT_S
    cache_enabled: bool = DEFAULT_CACHE_ENABLED
    cache_ttl_s: int = DEFAULT_CACHE_TTL_S
    cache_semantic: bool = DEFAULT_CACHE_SEMANTIC
    cache_threshold: float = DEFAULT_CACHE_THRESHOLD
    daily_token_limit: int = 0  # LLM_TENANT_DAILY_TOKENS; 0 = unlimited
    problems: tuple[str, ...] = ()  # config issues found while building (no values)

    @property
    def configured(self) -> bool:
        return bool(self.providers)

    @property
    def primary_model(self) -> str:
        return self.providers[0].model if self.providers else ""


# --- endpoints -----------------------------------------------------------------------------------------


def provider_kind(name: str | None, url: str) -> str | None:
    """KIND_OPENAI or KIND_ANTHROPIC for an explicit provider name or, without one, the URL (§7.1);
    None when the provider is one we cannot talk to."""
    lowered_name = (name or "").strip().lower()
    if lowered_name in ANTHROPIC_NAMES:
        return KIND_ANTHROPIC
    if lowered_name in UNSUPPORTED_NAMES:
        return None
    if lowered_name in OPENAI_COMPATIBLE_NAMES:
        return KIND_OPENAI
    lowered_url = url.lower()
    if "claude" in lowered_url or "anthropic" in lowered_url:
        return KIND_ANTHROPIC
    if "bedrock" in lowered_url or ("aiplatform.googleapis.com" in lowered_url and "openai" not in lowered_url):
        return None
    return KIND_OPENAI


_VERSION_SUFFIX_RE = re.compile(r"/v\d+(?:alpha|beta)?\d*$")


def openai_base_url(url: str) -> str:
    """The OpenAI SDK's base URL for an `llm-url` (§7.1): a full `.../chat/completions` URL is cut before
    it; a URL ending in a version (`/v1`, `/v4`, `/v1beta`) or `/openai` is used as is (upstream would
    append `/v1/chat/completions` to `https://api.openai.com/v1`, doubling the version); `z.ai` URLs are
    used as is; anything else gets `/v1`."""
    base = url.strip().split("?", 1)[0].rstrip("/")
    if "/chat/completions" in base:
        return base[: base.index("/chat/completions")]
    path = urlsplit(base).path
    if "z.ai" in base.lower() or _VERSION_SUFFIX_RE.search(path) or path.endswith("/openai"):
        return base
    return f"{base}/v1"


def anthropic_base_url(url: str) -> str:
    """The Anthropic SDK's base URL (it appends `/v1/messages`): a full messages URL or a `/v1` URL is
    trimmed back to the server root."""
    base = url.strip().split("?", 1)[0].rstrip("/")
    if "/v1/messages" in base:
        return base[: base.index("/v1/messages")]
    return base.removesuffix("/v1")


def _provider(kind: str, label: str, url: str, model: str, api_key: str, source: str, *,
              public_only: bool = False) -> ProviderConfig:
    base = anthropic_base_url(url) if kind == KIND_ANTHROPIC else openai_base_url(url)
    return ProviderConfig(kind=kind, label=label, base_url=base, model=model, source=source, api_key=api_key,
                          public_only=public_only)


# --- values ----------------------------------------------------------------------------------------------


def _bool(values: Mapping[str, str], key: str, default: bool, problems: list[str]) -> bool:
    raw = config_lookup(values, key)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    problems.append(f"{key} must be true or false, got {raw[:40]!r}; using {str(default).lower()}")
    return default


def _number(values: Mapping[str, str], key: str, default: float, low: float, high: float,
            problems: list[str]) -> float:
    raw = config_lookup(values, key)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        problems.append(f"{key} must be a number from {low:g} to {high:g}, got {raw[:40]!r}; using {default:g}")
        return default
    return value


@dataclass
class _KeyResolver:
    """Resolves `vault:` references in tenant-written config within the tenant's and bot's scope."""

    tenant: str
    bot_name: str
    problems: list[str]
    vault_down: bool = False  # a reference could not be read (Vault down, denied), as opposed to "not there"
    # The tenant admins' own secret references, read on the first vault: reference, once per resolver (a chain
    # names up to three keys).
    admin_references: AdminSecretReferences = field(init=False)

    def __post_init__(self) -> None:
        from apps.core.secrets import AdminSecretReferences

        self.admin_references = AdminSecretReferences(self.tenant)

    def __call__(self, key_name: str, value: str | None) -> str | None:
        """The key, or None (problem recorded) when the reference cannot be used."""
        from apps.core.secrets import SecretNotFound, SecretUnavailable, bot_config_secret_value

        if not value:
            return ""
        if not config_is_secret_reference(value):
            return value.strip()
        try:
            return bot_config_secret_value(value, tenant=self.tenant, bot=self.bot_name,
                                           admin_references=self.admin_references)
        except ValueError as exc:
            reason = str(exc)
        except SecretNotFound as exc:
            reason = str(exc)
        except SecretUnavailable as exc:
            reason = str(exc)
            self.vault_down = True
        logger.warning("llm: %s of bot %s (tenant %s) not usable: %s", key_name, self.bot_name, self.tenant, reason)
        self.problems.append(f"{key_name}: {reason}")
        return None


def _private_hosts_allowed() -> bool:
    return bool(getattr(django_settings, "LLM_ALLOW_PRIVATE_HOSTS", False))


def _public_url(key_name: str, url: str, problems: list[str]) -> bool:
    """Whether a bot-configured URL may be used (see the module docstring); records why not."""
    from apps.basic.ssrf import SSRFError, check_url

    if _private_hosts_allowed():
        return True
    try:
        check_url(url)
    except SSRFError as exc:
        problems.append(f"{key_name}: {exc} (LLM endpoints of bots must be public hosts; the operator can "
                        "allow private ones with LLM_ALLOW_PRIVATE_HOSTS)")
        return False
    return True


def _platform_key() -> str:
    """LLM_API_KEY; operators may write a `vault:` reference there too (resolved without a scope)."""
    from apps.core.secrets import SecretUnavailable, config_secret_value

    raw = getattr(django_settings, "LLM_API_KEY", "") or ""
    try:
        return config_secret_value(raw)
    except (ValueError, SecretUnavailable) as exc:
        logger.error("llm: LLM_API_KEY cannot be resolved: %s", exc)
        return ""


def platform_provider() -> ProviderConfig | None:
    """The platform default from settings (LLM_PROVIDER, LLM_URL, LLM_MODEL, LLM_API_KEY), or None."""
    url = (getattr(django_settings, "LLM_URL", "") or "").strip()
    model = (getattr(django_settings, "LLM_MODEL", "") or "").strip()
    name = (getattr(django_settings, "LLM_PROVIDER", "") or "").strip()
    if not url or not model:
        return None
    kind = provider_kind(name, url)
    if kind is None:
        logger.error("llm: LLM_PROVIDER %r is not supported; the platform default is off", name)
        return None
    return _provider(kind, "platform", url, model, _platform_key(), "platform")


# --- the chain -------------------------------------------------------------------------------------------


def _chain(values: Mapping[str, str], resolve: _KeyResolver, problems: list[str]) -> list[ProviderConfig]:
    chain: list[ProviderConfig] = []
    platform = platform_provider()

    def look(key: str) -> str | None:
        value = config_lookup(values, key)
        return value.strip() if value is not None and value.strip() else None

    # 1. The bot's own provider.
    name, url, model = look("llm-provider"), look("llm-url"), look("llm-model")
    server = look("llm-server")
    if not url and server and server.lower().startswith(("http://", "https://")):
        url = server  # AGENTS.md's base-URL form of llm-server (the docs' boolean form is ignored)
    key = resolve("llm-key", look("llm-key"))
    primary: ProviderConfig | None = None
    if name and provider_kind(name, url or "") is None:
        problems.append(f"llm-provider {name!r} is not supported (use an OpenAI-compatible gateway and 'openai')")
    elif key is None:
        pass  # unusable key (problem recorded): the chain starts at the fallbacks
    elif url and not _public_url("llm-url", url, problems):
        pass
    elif url:
        kind = provider_kind(name, url)
        if not model and platform is None:
            problems.append("llm-url is set but llm-model is not")
        elif kind is not None:
            # Never LLM_API_KEY here: the bot chose this endpoint.
            primary = _provider(kind, name or urlsplit(url).hostname or "bot", url,
                                model or (platform.model if platform else ""), key, "bot",
                                public_only=not _private_hosts_allowed())
    elif name and key and name.lower() in PUBLIC_PROVIDER_URLS and model:
        primary = _provider(provider_kind(name, "") or KIND_OPENAI, name.lower(), PUBLIC_PROVIDER_URLS[name.lower()],
                            model, key, "bot")
    elif platform is not None and (model or key):
        # The platform's endpoint with the bot's model and/or key.
        primary = ProviderConfig(kind=platform.kind, label=name or "platform", base_url=platform.base_url,
                                 model=model or platform.model, source="bot", api_key=key or platform.api_key)
    if primary is not None:
        chain.append(primary)
    anchor = primary or platform

    # 2. llm-fallback-* (and the docs' fallback-llm-* spelling).
    if _bool(values, "fallback-llm-enabled", True, problems):
        fb_name = look("llm-fallback-provider") or look("fallback-llm-provider")
        fb_model = look("llm-fallback-model") or look("fallback-llm-model")
        fb_url = look("llm-fallback-url")
        fb_key = resolve("llm-fallback-key", look("llm-fallback-key"))
        if (fb_name or fb_model or fb_url) and fb_key is not None:
            fb_public_only = False
            if fb_url and not _public_url("llm-fallback-url", fb_url, problems):
                kind, candidate_key = None, ""
                fb_url = None
            elif fb_url:
                kind = provider_kind(fb_name, fb_url)
                # Only its own key: never another endpoint's key sent to this URL.
                candidate_key = fb_key
                fb_public_only = not _private_hosts_allowed()
            elif anchor is not None and (not fb_name or provider_kind(fb_name, "") == anchor.kind):
                kind, fb_url, candidate_key = anchor.kind, anchor.base_url, fb_key or anchor.api_key
                fb_public_only = anchor.public_only
            elif fb_name and fb_name.lower() in PUBLIC_PROVIDER_URLS and fb_key:
                kind, fb_url, candidate_key = provider_kind(fb_name, ""), PUBLIC_PROVIDER_URLS[fb_name.lower()], fb_key
            else:
                kind = None
                candidate_key = ""
            fb_model = fb_model or (anchor.model if anchor else None)
            if kind is None or not fb_url or not fb_model:
                problems.append("llm-fallback-*: no usable endpoint and model; fallback skipped")
            else:
                chain.append(_provider(kind, fb_name or "fallback", fb_url, fb_model, candidate_key, "fallback",
                                       public_only=fb_public_only))

    # 3. model-fallback-order: other models (model-<alias>) on the same endpoint.
    order = look("model-fallback-order")
    if order and anchor is not None and _bool(values, "model-fallback-enabled", True, problems):
        for alias in (a.strip() for a in order.split(",")):
            alias_model = look(f"model-{alias}") if alias else None
            if alias_model:
                chain.append(ProviderConfig(kind=anchor.kind, label=f"{anchor.label} ({alias})",
                                            base_url=anchor.base_url, model=alias_model,
                                            source="model-fallback-order", api_key=anchor.api_key,
                                            public_only=anchor.public_only))

    # 4. The platform default, last -- but not when the bot's own key could not be read because Vault is down
    # or refusing: like apps.core.secrets, an outage must not silently swap a bot's own provider for the
    # platform's (its bill, its model, its data processing terms). A key that is not there, or a reference
    # outside the bot's scope, is a configuration error and the chain goes on.
    if platform is not None and not resolve.vault_down:
        chain.append(platform)

    unique: list[ProviderConfig] = []
    for provider in chain:
        if not any(provider.same_target(seen) for seen in unique):
            shared = not provider.api_key or (platform is not None and provider.api_key == platform.api_key)
            unique.append(dataclasses.replace(provider, shared=shared))
    return unique


def _current_tenant() -> str:
    from django.db import connection

    return getattr(connection, "schema_name", "") or "public"


def llm_settings_for(bot: Any, config_values: Mapping[str, str] | None = None, *,
                     tenant: str | None = None) -> LLMSettings:
    """The LLM settings of `bot` (a bots.Bot) in the current tenant (or `tenant`, a schema name).

    `config_values` is the bot's config.csv as stored (`apps.bots.selectors.bot_config_values(bot)`,
    read when not given). Never raises for a bad value: see `LLMSettings.problems`.
    """
    if config_values is None:
        from apps.bots.selectors import bot_config_values

        config_values = bot_config_values(bot)
    tenant = tenant or _current_tenant()
    problems: list[str] = []
    bot_name = str(getattr(bot, "name", "") or "")
    resolve = _KeyResolver(tenant=tenant, bot_name=bot_name, problems=problems)
    providers = tuple(_chain(config_values, resolve, problems))

    temperature_raw = config_lookup(config_values, "llm-temperature")
    temperature = _number(config_values, "llm-temperature", 1.0, 0.0, 2.0, problems) if temperature_raw else None
    max_tokens_raw = config_lookup(config_values, "llm-max-tokens")
    max_tokens = (int(_number(config_values, "llm-max-tokens", 4096, 1, MAX_TOKENS_LIMIT, problems))
                  if max_tokens_raw else None)
    result = LLMSettings(
        tenant=tenant,
        bot_id=str(getattr(bot, "pk", "") or ""),
        bot_name=bot_name,
        providers=providers,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout_s=float(getattr(django_settings, "LLM_TIMEOUT_S", DEFAULT_TIMEOUT_S) or DEFAULT_TIMEOUT_S),
        breaker_threshold=int(_number(config_values, "circuit-breaker-threshold", DEFAULT_BREAKER_THRESHOLD, 1,
                                      BREAKER_THRESHOLD_MAX, problems)),
        breaker_timeout_s=_number(config_values, "circuit-breaker-timeout", DEFAULT_BREAKER_TIMEOUT_S, 0.1,
                                  BREAKER_TIMEOUT_MAX_S, problems),
        cache_enabled=_bool(config_values, "llm-cache", DEFAULT_CACHE_ENABLED, problems),
        cache_ttl_s=int(_number(config_values, "llm-cache-ttl", DEFAULT_CACHE_TTL_S, 1, CACHE_TTL_MAX_S, problems)),
        cache_semantic=_bool(config_values, "llm-cache-semantic", DEFAULT_CACHE_SEMANTIC, problems),
        cache_threshold=_number(config_values, "llm-cache-threshold", DEFAULT_CACHE_THRESHOLD, CACHE_THRESHOLD_MIN,
                                1.0, problems),
        daily_token_limit=_daily_token_limit(tenant),
        problems=tuple(problems),
    )
    if problems:
        logger.info("llm: bot %s (tenant %s) config problems: %s", bot_name, tenant, "; ".join(problems))
    return result


def _daily_token_limit(tenant: str) -> int:
    """The tenant's own allowance (set by support staff) or the platform's LLM_TENANT_DAILY_TOKENS."""
    from apps.tenants.selectors import tenant_settings

    platform = max(0, int(getattr(django_settings, "LLM_TENANT_DAILY_TOKENS", 0) or 0))
    if not tenant or tenant == "public":
        return platform
    try:
        own = tenant_settings(tenant).get("llm_daily_tokens")
    except Exception:  # noqa: BLE001 - no database at hand (a unit test, an outage): the platform's limit holds
        logger.warning("llm: could not read tenant %s's own token quota; using the platform's", tenant)
        return platform
    return platform if own is None else int(own)


def llm_is_configured(settings: LLMSettings) -> bool:
    """Whether any provider is configured for the bot (the chat core answers offline when not)."""
    return settings.configured
