"""LLM layer speed: cached-answer latency (goal <= 20 ms, issue 6), and what the layer adds to a live
streamed answer compared with the bare `openai` SDK against the same fake server on loopback.

Needs no database: a private redis-server (the cache, breaker and quota live in Redis) and our fake LLM
server (tests/support/llm_fake.py). BENCH_LLM_CALLS sets the number of calls per figure.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CALLS = int(os.environ.get("BENCH_LLM_CALLS", "300"))
# A typical short answer: ~120 words streamed in 60 pieces, with no artificial delay between them.
ANSWER = " ".join(f"word{i}" for i in range(120))
CHUNK_CHARS = 16


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000
    return f"p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"


def main() -> int:
    from gbplatform import localservices

    redis = localservices.redis_start(ROOT / "var" / "bench-redis", persist=False)
    os.environ.update(REDIS_URL=redis.url, DJANGO_SETTINGS_MODULE="gbplatform.settings.base",
                      DATABASE_URL="postgres://bench@127.0.0.1:9/unused", LOG_LEVEL="WARNING",
                      SECRET_KEY="bench-only-key")
    try:
        import django

        django.setup()
        run()
    finally:
        redis.stop()
    return 0


def run() -> None:
    import dataclasses
    import uuid

    import openai

    from apps.llm.cache import cache_clear
    from apps.llm.config import KIND_OPENAI, LLMSettings, ProviderConfig
    from apps.llm.services import chat
    from tests.support.llm_fake import FakeLLMServer, Reply

    with FakeLLMServer(default=lambda request: Reply(text=ANSWER, chunk_chars=CHUNK_CHARS, usage=(50, 120))) as fake:
        provider = ProviderConfig(kind=KIND_OPENAI, label="fake", base_url=fake.base_url, model="fake-model",
                                  source="bot", api_key="sk-bench")
        settings = LLMSettings(tenant=f"bench_{uuid.uuid4().hex[:8]}", bot_id="1", bot_name="bench",
                               providers=(provider,), cache_enabled=False)
        question = [{"role": "system", "content": "You are a benchmark."},
                    {"role": "user", "content": "What are your opening hours?"}]

        # Live streaming: the bare SDK, then chat() (breaker, quota, stream handling) on the same server.
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-bench", max_retries=0)
        bare, ours = [], []
        for _ in range(CALLS):
            started = time.perf_counter()
            stream = client.chat.completions.create(model="fake-model", messages=question, stream=True,
                                                    stream_options={"include_usage": True})
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            chat(settings, question, use_cache=False)
            ours.append(time.perf_counter() - started)
        print(f"live answer, bare openai SDK ({len(ANSWER)} chars, {len(ANSWER) // CHUNK_CHARS + 1} chunks): "
              f"{_ms(bare)}")
        print(f"live answer through chat() (breaker + quota + stream):         {_ms(ours)}")

        # Cached answers: one miss fills the cache, then every call is a hit (exact, then semantic).
        cached = dataclasses.replace(settings, cache_enabled=True)
        chat(cached, question)
        exact = []
        for _ in range(CALLS):
            started = time.perf_counter()
            result = chat(cached, question, on_delta=lambda text: None)
            exact.append(time.perf_counter() - started)
            assert result.cached
        print(f"cached answer, exact hit (goal <= 20 ms):                       {_ms(exact)}")

        semantic = dataclasses.replace(cached, cache_semantic=True)
        cache_clear(settings)  # the exact entry above was stored without an embedding
        chat(semantic, question)
        paraphrase = [question[0], {"role": "user", "content": "what are your opening hours"}]
        similar = []
        for _ in range(CALLS):
            started = time.perf_counter()
            result = chat(semantic, paraphrase, on_delta=lambda text: None)
            similar.append(time.perf_counter() - started)
            assert result.cache_kind == "semantic"
        print(f"cached answer, semantic hit (MiniLM embedding of the question):  {_ms(similar)}")
        cache_clear(settings)


if __name__ == "__main__":
    sys.exit(main())
