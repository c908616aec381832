"""The per-provider circuit breaker and the fallback chain, against two fake providers on loopback."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from apps.llm.breaker import CLOSED, HALF_OPEN, OPEN, breaker_allow, breaker_record_failure, breaker_state
from apps.llm.services import LLMUnavailable, chat
from tests.llm.conftest import make_settings, openai_provider
from tests.support.llm_fake import Reply

QUESTION = [{"role": "user", "content": "are you there?"}]
BREAKER_TIMEOUT_S = 0.4


def _down(request):
    return Reply(status=503, error_message="upstream is down")


@pytest.fixture
def chain(llm_fake, llm_fake_b):
    """Provider A (primary, failing) and B (fallback, healthy); threshold 2, a short open period."""
    llm_fake.default = _down
    llm_fake_b.default = lambda request: Reply(text=f"B answers: {request.last_user_text}")
    a = openai_provider(llm_fake, label="primary")
    b = openai_provider(llm_fake_b, model="fallback-model", label="fallback", source="fallback")
    settings = make_settings(a, b, breaker_threshold=2, breaker_timeout_s=BREAKER_TIMEOUT_S, max_retries=0)
    return settings, a, b


def test_breaker_opens_after_the_threshold_and_the_fallback_answers_meanwhile(chain, llm_fake, llm_fake_b):
    settings, a, _ = chain
    for _ in range(2):
        result = chat(settings, QUESTION)
        assert (result.text, result.provider, result.model) == ("B answers: are you there?", "fallback",
                                                                "fallback-model")
    assert len(llm_fake.chat_requests()) == 2
    assert breaker_state(a, settings).state == OPEN
    # Open: A is not asked at all; B answers at once.
    result = chat(settings, QUESTION)
    assert result.provider == "fallback"
    assert len(llm_fake.chat_requests()) == 2
    assert len(llm_fake_b.chat_requests()) == 3


def test_breaker_half_opens_after_the_timeout_and_closes_on_a_successful_probe(chain, llm_fake):
    settings, a, _ = chain
    chat(settings, QUESTION)
    chat(settings, QUESTION)
    assert breaker_state(a, settings).state == OPEN
    time.sleep(BREAKER_TIMEOUT_S + 0.1)
    assert breaker_state(a, settings).state == HALF_OPEN
    llm_fake.default = lambda request: Reply(text="A is back")
    result = chat(settings, QUESTION)
    assert (result.text, result.provider) == ("A is back", "primary")
    assert breaker_state(a, settings).state == CLOSED
    assert breaker_state(a, settings).failures == 0


def test_a_failed_probe_opens_the_breaker_again(chain, llm_fake):
    settings, a, _ = chain
    chat(settings, QUESTION)
    chat(settings, QUESTION)
    first_open = breaker_state(a, settings).opened_at
    time.sleep(BREAKER_TIMEOUT_S + 0.1)
    assert chat(settings, QUESTION).provider == "fallback"  # the probe went to A, failed, B answered
    assert len(llm_fake.chat_requests()) == 3
    state = breaker_state(a, settings)
    assert state.state == OPEN and state.opened_at > first_open


def test_only_one_caller_gets_the_half_open_probe(chain):
    settings, a, _ = chain
    for _ in range(2):
        breaker_record_failure(a, settings)
    assert breaker_allow(a, settings) is False
    time.sleep(BREAKER_TIMEOUT_S + 0.1)
    assert [breaker_allow(a, settings) for _ in range(3)] == [True, False, False]


def test_every_breaker_open_is_unavailable_with_the_reasons(llm_fake, llm_fake_b):
    llm_fake.default = llm_fake_b.default = _down
    settings = make_settings(openai_provider(llm_fake), openai_provider(llm_fake_b, label="second"),
                             breaker_threshold=1, max_retries=0)
    with pytest.raises(LLMUnavailable) as caught:
        chat(settings, QUESTION)
    assert all("HTTP 503" in reason for reason in caught.value.reasons)
    with pytest.raises(LLMUnavailable) as caught:
        chat(settings, QUESTION)
    assert len(caught.value.reasons) == 2 and all("circuit open" in r for r in caught.value.reasons)
    # The message is for users; endpoints (internal addresses) stay in the reasons, for logs.
    assert str(caught.value) == "no LLM provider could answer (2 tried)"
    assert "127.0.0.1" not in str(caught.value) and "127.0.0.1" in caught.value.detail
    assert len(llm_fake.chat_requests()) == len(llm_fake_b.chat_requests()) == 1


def test_client_errors_do_not_open_the_breaker(llm_fake):
    llm_fake.default = lambda request: Reply(status=404, error_message="no such model")
    provider = openai_provider(llm_fake)
    settings = make_settings(provider, breaker_threshold=1, max_retries=0)
    for _ in range(3):
        with pytest.raises(LLMUnavailable) as caught:
            chat(settings, QUESTION)
        assert "HTTP 404: no such model" in caught.value.detail
    assert len(llm_fake.chat_requests()) == 3
    assert breaker_state(provider, settings).state == CLOSED


def test_another_process_sees_the_open_breaker(chain):
    """Two web processes agree: the state lives in Redis, not in this process."""
    settings, a, _ = chain
    settings = dataclasses.replace(settings, breaker_timeout_s=30.0)  # stays open while Python starts
    chat(settings, QUESTION)
    chat(settings, QUESTION)
    script = (
        "import django, json, os; django.setup()\n"
        "from apps.llm.breaker import breaker_allow, breaker_state\n"
        "from apps.llm.config import ProviderConfig\n"
        "from tests.llm.conftest import make_settings\n"
        "p = ProviderConfig(**json.loads(os.environ['PROVIDER']))\n"
        "s = make_settings(p, breaker_timeout_s=float(os.environ['TIMEOUT']))\n"
        "print(breaker_state(p, s).state, breaker_allow(p, s))\n"
    )
    env = {**os.environ, "PROVIDER": json.dumps(asdict(a)), "TIMEOUT": "30",
           "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "open False"


def test_a_shared_providers_breaker_takes_the_platforms_threshold_not_one_bots(llm_fake, settings):
    """Every tenant on the platform's endpoint and key shares one breaker: a bot's circuit-breaker-threshold
    of 1 must not open it for all of them on one failure."""
    settings.LLM_BREAKER_THRESHOLD = 3
    shared = dataclasses.replace(openai_provider(llm_fake), shared=True)
    impatient = make_settings(shared, breaker_threshold=1)
    for _ in range(2):
        breaker_record_failure(shared, impatient)
        assert breaker_state(shared, impatient).state == CLOSED
    breaker_record_failure(shared, impatient)
    assert breaker_state(shared, impatient).state == OPEN
    own = openai_provider(llm_fake)  # the bot's own key: its own threshold
    breaker_record_failure(own, impatient)
    assert breaker_state(own, impatient).state == OPEN


def test_the_chain_marks_providers_on_the_platforms_credential_as_shared(settings):
    from types import SimpleNamespace

    from apps.llm.config import llm_settings_for

    settings.LLM_URL, settings.LLM_MODEL, settings.LLM_API_KEY = "https://llm.example.com/v1", "m", "sk-platform"
    bot = SimpleNamespace(name="b", pk=1)
    on_platform = llm_settings_for(bot, {"llm-model": "other-model"}, tenant="t")
    assert [p.shared for p in on_platform.providers] == [True, True]
    own = llm_settings_for(bot, {"llm-url": "https://api.example.org/v1", "llm-model": "x", "llm-key": "sk-own"},
                           tenant="t")
    assert [(p.source, p.shared) for p in own.providers] == [("bot", False), ("platform", True)]


def test_a_probe_hanging_past_the_breaker_timeout_keeps_its_claim_and_is_not_retried(llm_fake):
    """Against a hung provider one probe lasts its read timeout, longer than the breaker timeout: its claim must
    last as long, or another caller starts a second probe every breaker timeout; and it makes one attempt."""
    import threading

    settings = make_settings(openai_provider(llm_fake), breaker_threshold=1, breaker_timeout_s=BREAKER_TIMEOUT_S,
                             timeout_s=3.0, max_retries=2, retry_base_delay_s=0.01)
    a = settings.providers[0]
    breaker_record_failure(a, settings)
    time.sleep(BREAKER_TIMEOUT_S + 0.1)
    assert breaker_state(a, settings).state == HALF_OPEN
    llm_fake.default = lambda request: Reply(text="too late", delay_s=4.5)  # hangs past the read timeout
    outcome: list[object] = []

    def probe() -> None:
        try:
            outcome.append(chat(settings, QUESTION))
        except LLMUnavailable as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe)
    thread.start()
    deadline = time.monotonic() + 2
    while not llm_fake.chat_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(llm_fake.chat_requests()) == 1
    time.sleep(1.5)  # past the breaker timeout (and a claim of that length), well within the probe's 3 s
    assert breaker_allow(a, settings) is False  # the probe is still in flight: nobody else probes
    thread.join(15)
    assert isinstance(outcome[0], LLMUnavailable)
    assert len(llm_fake.chat_requests()) == 1  # the probe timed out once: no retry
    assert breaker_state(a, settings).state == OPEN


def test_a_probe_cut_by_an_exception_that_is_no_provider_failure_releases_its_claim(chain, llm_fake):
    """An exception escaping the probe's call (the caller's on_delta raising, a job's soft time limit) gives no
    verdict on the provider: the claim is released, or every caller is refused until it expires."""
    settings, a, _ = chain
    chat(settings, QUESTION)
    chat(settings, QUESTION)
    assert breaker_state(a, settings).state == OPEN
    time.sleep(BREAKER_TIMEOUT_S + 0.1)
    llm_fake.default = lambda request: Reply(text="back again")

    def on_delta(text: str) -> None:
        raise RuntimeError("the caller's socket went away")

    with pytest.raises(RuntimeError):
        chat(settings, QUESTION, on_delta=on_delta)
    assert breaker_state(a, settings).state == HALF_OPEN  # no verdict: still half-open
    assert breaker_allow(a, settings) is True  # and the next caller may probe
