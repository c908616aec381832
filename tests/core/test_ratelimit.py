"""Rate limits against the run's real Redis: exact counts under concurrency, burst and refill, one bucket per
tenant, limits from config.csv keys, 429 with Retry-After from the decorator, client IPs that cannot be
forged, identities that cannot be invented, 503 (not 500) when Redis is gone, and the platform-wide per-IP
bucket that counts one address's requests to every tenant together."""

from __future__ import annotations

import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django_redis import get_redis_connection
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create
from apps.core.ratelimit import (
    RateLimitNotConfigured,
    RateLimitUnavailable,
    rate_check,
    rate_limits_for,
    ratelimited,
    request_rate_check,
    request_rate_key,
)
from gbplatform.localservices import free_port


def _scope() -> str:
    """A fresh scope per test: counters of earlier tests (same Redis) never interfere."""
    return f"test.{uuid.uuid4().hex[:12]}"


def _allowed(scope: str, key: str, n: int, **limit) -> int:
    return sum(rate_check(scope, key, **limit) is None for _ in range(n))


# --- rate_check -------------------------------------------------------------------------------------------------


def test_the_limit_passes_then_the_wait_until_the_next_slot_is_returned():
    scope = _scope()
    assert _allowed(scope, "client", 5, limit=5, window_s=60) == 5
    wait = rate_check(scope, "client", limit=5, window_s=60)
    assert wait is not None and 11.0 < wait <= 12.0  # one slot every 60/5 s
    assert rate_check(scope, "another-client", limit=5, window_s=60) is None


def test_burst_adds_back_to_back_requests_on_top_of_the_limit():
    scope = _scope()
    assert _allowed(scope, "client", 20, limit=5, window_s=60, burst=3) == 8


def test_a_slot_frees_up_after_the_returned_wait():
    # One slot a second: the checks below that must find no free slot have a second to run in, not 0.1 s.
    scope, limit = _scope(), dict(limit=10, window_s=10)
    assert _allowed(scope, "client", 10, **limit) == 10
    wait = rate_check(scope, "client", **limit)
    assert wait is not None and 0 < wait <= 1.0
    time.sleep(wait + 0.02)
    assert rate_check(scope, "client", **limit) is None
    assert rate_check(scope, "client", **limit) is not None  # that slot was the only one


def test_fifty_parallel_requests_against_a_limit_of_ten_let_exactly_ten_through():
    scope = _scope()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: rate_check(scope, "one-ip", limit=10, window_s=3600), range(50)))
    assert sum(r is None for r in results) == 10
    assert all(r > 0 for r in results if r is not None)


@pytest.mark.parametrize(("limit", "window_s", "burst"), [(0, 60, 0), (5, 0, 0), (5, 60, -1)])
def test_nonsensical_limits_are_refused(limit, window_s, burst):
    with pytest.raises(ValueError, match="invalid rate limit"):
        rate_check(_scope(), "k", limit=limit, window_s=window_s, burst=burst)


def test_malformed_scopes_are_refused():
    with pytest.raises(ValueError, match="invalid rate-limit scope"):
        rate_check("has space", "k", limit=1, window_s=1)


@pytest.mark.django_db
def test_each_tenant_has_its_own_counters_unless_the_limit_is_platform_wide(canary_tenants):
    scope = _scope()
    with schema_context(canary_tenants.a.schema_name):
        assert _allowed(scope, "203.0.113.5", 5, limit=3, window_s=600) == 3
        assert _allowed(scope + ".global", "203.0.113.5", 2, limit=3, window_s=600, per_tenant=False) == 2
    with schema_context(canary_tenants.b.schema_name):
        assert _allowed(scope, "203.0.113.5", 5, limit=3, window_s=600) == 3
        assert _allowed(scope + ".global", "203.0.113.5", 2, limit=3, window_s=600, per_tenant=False) == 1
    # An explicit tenant (what async callers pass) counts in that tenant, whatever schema is active here.
    assert rate_check(scope, "203.0.113.5", limit=3, window_s=600, tenant=canary_tenants.a.schema_name) is not None
    assert _allowed(scope, "203.0.113.5", 1, limit=3, window_s=600, tenant="tenant_c") == 1
    keys = [k.decode() for k in get_redis_connection("default").keys(f"rl:*:{scope}:*")]
    assert {k.split(":")[1] for k in keys} == {canary_tenants.a.schema_name, canary_tenants.b.schema_name, "tenant_c"}
    assert not any(b"203.0.113.5" in k for k in get_redis_connection("default").keys("rl:*")), "keys are hashed"


@pytest.fixture
def redis_down(settings):
    """The cache pointed at a loopback port where nothing listens: Redis is down."""
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"],
                                                       "LOCATION": f"redis://127.0.0.1:{free_port()}/1"}}


def test_redis_down_is_reported_not_guessed(redis_down):
    with pytest.raises(RateLimitUnavailable, match="unavailable"):
        rate_check(_scope(), "k", limit=1, window_s=1)


@pytest.mark.django_db
def test_without_redis_only_a_debug_server_goes_unlimited(canary_tenants, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    view = _sign_in_view()
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(RateLimitNotConfigured, match="REDIS_URL"):
            rate_check(_scope(), "k", limit=1, window_s=1)
        assert view(_request("198.51.100.2")).status_code == 503
        settings.DEBUG = True
        assert view(_request("198.51.100.2")).status_code == 200


# --- limits from config.csv ----------------------------------------------------------------------------------------


def test_defaults_are_the_platform_settings(settings):
    settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_API_CHAT, settings.RATE_LIMIT_BURST = 100, 30, 20
    api, chat = rate_limits_for({}, "api"), rate_limits_for({}, "chat")
    assert (api.limit, api.window_s, api.burst, api.by, api.enabled) == (100, 60, 20, "ip", True)
    assert (chat.limit, chat.window_s) == (30, 60) and chat.issues == ()


def test_the_seed_keys_override_the_defaults_per_endpoint():
    config = {"rate-limit-requests": "200", "rate-limit-window": "30", "rate-limit-burst": "5",
              "rate-limit-by": "session", "rate-limit-api-chat": "12", "rate-limit-api-files": "7",
              "rate-limit-api-auth": "4", "rate-limit-api-llm": "3"}
    limits = {endpoint: rate_limits_for(config, endpoint) for endpoint in ("api", "chat", "files", "auth", "llm")}
    assert {e: lim.limit for e, lim in limits.items()} == {"api": 200, "chat": 12, "files": 7, "auth": 4, "llm": 3}
    assert {(lim.window_s, lim.burst, lim.by) for lim in limits.values()} == {(30, 5, "session")}


def test_legacy_title_case_keys_and_placeholders_follow_config_lookup():
    limit = rate_limits_for({"Rate Limit Requests": "50", "rate-limit-window": "none"}, "api")
    assert (limit.limit, limit.window_s) == (50, 60)


@pytest.mark.parametrize(
    ("config", "field", "expected", "issue"),
    [({"rate-limit-requests": "lots"}, "limit", 100, "not a whole number"),
     ({"rate-limit-requests": "0"}, "limit", 1, "outside 1..100000"),
     ({"rate-limit-requests": "999999999"}, "limit", 100_000, "outside"),
     ({"rate-limit-window": "-5"}, "window_s", 1, "outside 1..86400"),
     ({"rate-limit-burst": "2.5"}, "burst", 20, "not a whole number"),
     ({"rate-limit-by": "cookie"}, "by", "ip", "not one of ip, user, session, api-key")],
)
def test_bad_config_values_fall_back_and_say_why(settings, config, field, expected, issue):
    settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_BURST = 100, 20
    limit = rate_limits_for(config, "api")
    assert getattr(limit, field) == expected
    assert any(issue in text for text in limit.issues), limit.issues


def test_a_tenant_can_switch_limits_off_except_on_sign_in():
    assert rate_limits_for({"rate-limit-enabled": "false"}, "chat").enabled is False
    auth = rate_limits_for({"rate-limit-enabled": "false"}, "auth")
    assert auth.enabled is True and "does not apply to the auth endpoint" in auth.issues[0]


def test_unknown_endpoints_are_refused():
    with pytest.raises(ValueError, match="unknown rate-limit endpoint 'upload'"):
        rate_limits_for({}, "upload")
    with pytest.raises(ValueError, match="unknown rate-limit-by"):
        ratelimited("api", by="cookie")


# --- the decorator ------------------------------------------------------------------------------------------------


@pytest.fixture
def tight_auth(settings):
    settings.RATE_LIMIT_API_AUTH, settings.RATE_LIMIT_BURST, settings.RATE_LIMIT_WINDOW_S = 3, 0, 60
    settings.TRUSTED_PROXY_IPS = ["10.0.0.2"]


def _sign_in_view():
    @ratelimited("auth", methods=("POST",))
    def sign_in(request):
        return HttpResponse("ok")

    return sign_in


def _request(remote: str, forwarded: str | None = None, user=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    request = RequestFactory().post("/accounts/login/", **extra)
    request.user = user or AnonymousUser()
    return request


@pytest.mark.django_db
def test_over_the_limit_answers_429_json_with_retry_after(canary_tenants, tight_auth):
    view = _sign_in_view()
    with schema_context(canary_tenants.a.schema_name):
        ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
        statuses = [view(_request(ip)).status_code for _ in range(3)]
        refused = view(_request(ip))
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    page = RequestFactory().get("/accounts/login/", REMOTE_ADDR=ip)
    with schema_context(canary_tenants.a.schema_name):
        assert view(page).status_code == 200, "only POSTs count"
    body = json.loads(refused.content)
    assert body["error"] == "rate_limit_exceeded" and body["message"]
    # The next slot frees up one interval (60 s / 3) after the first request, in whole seconds.
    assert refused["Retry-After"] == str(body["retry_after_secs"])
    assert int(refused["Retry-After"]) in (math.ceil(60 / 3) - 1, math.ceil(60 / 3))


@pytest.mark.django_db
def test_a_forged_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(canary_tenants, tight_auth):
    view = _sign_in_view()
    with schema_context(canary_tenants.a.schema_name):
        attacker = "198.51.100.77"
        forged = [view(_request(attacker, forwarded=f"192.0.2.{i}")).status_code for i in range(5)]
        assert forged == [200, 200, 200, 429, 429], "rotating X-Forwarded-For does not reset the attacker's bucket"
        # Behind the trusted proxy: the right-most untrusted hop is the client; left-most entries are forgeable.
        first = [view(_request("10.0.0.2", forwarded=f"6.6.6.{i}, 203.0.113.10")).status_code for i in range(4)]
        second = view(_request("10.0.0.2", forwarded="203.0.113.11")).status_code
    assert first == [200, 200, 200, 429] and second == 200


@pytest.mark.django_db
def test_unverified_identities_count_against_the_ip(canary_tenants, settings):
    settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_BURST = 2, 0

    @ratelimited("api", by="api-key")
    def api(request):
        return HttpResponse("ok")

    with schema_context(canary_tenants.a.schema_name):
        invented = []
        for i in range(3):
            request = _request("198.51.100.90")
            request.META["HTTP_AUTHORIZATION"] = f"Bearer made-up-{i}"
            invented.append(api(request).status_code)
        verified = _request("198.51.100.90")
        verified.api_key = ApiKey(prefix="0123456789ab")  # what api_access sets once it checked the key
        assert request_rate_key(verified, "api-key") == "api-key:0123456789ab"
        assert api(verified).status_code == 200
    assert invented == [200, 200, 429]


@pytest.mark.django_db
def test_signed_in_users_have_their_own_buckets_and_ipv6_counts_per_64(canary_tenants, django_user_model):
    with schema_context(canary_tenants.a.schema_name):
        alice = django_user_model.objects.create_user(username="alice-rl")
        assert request_rate_key(_request("203.0.113.3", user=alice), "user") == f"user:{alice.pk}"
        assert request_rate_key(_request("203.0.113.3"), "user") == "ip:203.0.113.3"
        assert request_rate_key(_request("2001:db8:1:2::1"), "ip") == request_rate_key(
            _request("2001:db8:1:2:ffff::9"), "ip") == "ip:2001:db8:1:2::/64"
        assert request_rate_key(_request("203.0.113.3"), "session") == "ip:203.0.113.3"


@pytest.mark.django_db
async def test_async_views_are_limited_too(canary_tenants, settings):
    settings.RATE_LIMIT_API_LLM, settings.RATE_LIMIT_BURST = 1, 0

    @ratelimited("llm")
    async def complete(request):
        return HttpResponse("ok")

    ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    with schema_context(canary_tenants.b.schema_name):
        assert (await complete(_request(ip))).status_code == 200
        assert (await complete(_request(ip))).status_code == 429


@pytest.mark.django_db
def test_redis_down_answers_503_with_retry_after_or_passes_when_configured_to(canary_tenants, redis_down, settings):
    view = _sign_in_view()
    with schema_context(canary_tenants.a.schema_name):
        response = view(_request("198.51.100.1"))
        assert response.status_code == 503 and response["Retry-After"] == "5"
        assert json.loads(response.content)["error"] == "rate_limit_unavailable"
        settings.RATE_LIMIT_FAIL_OPEN = True
        assert view(_request("198.51.100.1")).status_code == 200


@pytest.mark.django_db
def test_kb_search_is_limited_per_tenant(canary_tenants, settings):
    """Counted once the key is checked (@ratelimited sits below @api_access, so `api-key` can count per key);
    a request with no credentials is answered 401 without being counted, and junk keys use up the address's
    sign-in limit (tests/accounts/test_services.py)."""
    settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_BURST = 2, 0
    ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    statuses_a = [_kb_search(canary_tenants.a, ip).status_code for _ in range(3)]
    status_b = _kb_search(canary_tenants.b, ip).status_code
    assert Client(HTTP_HOST=canary_tenants.a.host, REMOTE_ADDR=ip).post(
        "/api/kb/search", "{}", content_type="application/json").status_code == 401  # not counted: no 429
    assert statuses_a[:2] != [429, 429] and statuses_a[2] == 429
    assert status_b != 429, "tenant B's counter is its own"


# --- the platform-wide per-IP limit ----------------------------------------------------------------------------------
# Each test gives the platform bucket 2 events a minute (a slot every 30 s: no slot frees up while a test runs)
# and the tenants' own limits far more, so a refusal can only come from the platform bucket.


def _ip() -> str:
    return f"203.0.113.{uuid.uuid4().int % 250 + 1}"


def _platform_keys() -> list[bytes]:
    return list(get_redis_connection("default").scan_iter(match="rl:platform:*", count=1000))


@pytest.fixture
def platform_limit_of_two(settings):
    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 2
    settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_BURST, settings.RATE_LIMIT_WINDOW_S = 50, 0, 3600


_search_keys: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _no_search_keys_of_earlier_tests():
    yield
    _search_keys.clear()  # the keys were rows of the test's transaction


def _kb_search(tenant, ip: str):
    """A kb search sent with an API key of the tenant (the `api` limit counts requests past the key check)."""
    if tenant.host not in _search_keys:
        with schema_context(tenant.schema_name):
            admin = get_user_model().objects.get(username="admin")
            _search_keys[tenant.host] = api_key_create(name="search", scopes=["kb:search"], created_by=admin).secret
    return Client(HTTP_HOST=tenant.host, REMOTE_ADDR=ip).post("/api/kb/search", "{}", content_type="application/json",
                                                             HTTP_AUTHORIZATION=f"Bearer {_search_keys[tenant.host]}")


@pytest.mark.django_db
def test_an_address_spreading_requests_over_two_tenants_is_refused_by_the_platform_limit(
        canary_tenants, platform_limit_of_two, settings):
    a, b = canary_tenants.a, canary_tenants.b
    ip = _ip()
    assert _kb_search(a, ip).status_code != 429
    assert _kb_search(b, ip).status_code != 429
    refused_a, refused_b = _kb_search(a, ip), _kb_search(b, ip)
    assert refused_a.status_code == refused_b.status_code == 429, "A and B each let through 1 of 50: the platform's"
    body = json.loads(refused_a.content)
    assert body["error"] == "rate_limit_exceeded" and "your address" in body["message"]
    assert 25 <= int(refused_a["Retry-After"]) == body["retry_after_secs"] <= 30  # one slot every 60/2 s
    # Another address is counted on its own, at both tenants.
    other = "192.0.2.77"
    assert _kb_search(a, other).status_code != 429 and _kb_search(b, other).status_code != 429
    assert len(_platform_keys()) == 2, "one platform bucket per address, whatever the tenant"
    # Neither tenant's own limit was reached (a refused request counts in no bucket): without the platform
    # limit the first address goes on at both.
    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 0
    assert _kb_search(a, ip).status_code != 429 and _kb_search(b, ip).status_code != 429


@pytest.mark.django_db
def test_chat_connects_and_messages_share_the_address_bucket_with_http_across_tenants(
        canary_tenants, platform_limit_of_two):
    from apps.core.ratelimit import RateLimit
    from apps.sessions.limits import connect_rate_check, message_rate_check

    chat = RateLimit(endpoint="chat", enabled=True, limit=50, window_s=3600, burst=0, by="ip")
    ip, other = "2001:db8:7:1::5", "2001:db8:7:2::5"
    assert _kb_search(canary_tenants.a, ip).status_code != 429  # HTTP at A
    with schema_context(canary_tenants.b.schema_name):
        assert connect_rate_check(ip, per_minute=60) is None  # a chat socket at B
        wait = message_rate_check(session_id=str(uuid.uuid4()), ip="2001:db8:7:1::9", limit=chat)  # same /64
        assert wait is not None and 25 < wait <= 30
        assert connect_rate_check(ip, per_minute=60) is not None
        # Another /64 is another client.
        assert message_rate_check(session_id=str(uuid.uuid4()), ip=other, limit=chat) is None
        assert connect_rate_check(other, per_minute=60) is None
    with schema_context(canary_tenants.a.schema_name):
        assert message_rate_check(session_id=str(uuid.uuid4()), ip=ip, limit=chat) is not None


@pytest.mark.django_db
def test_a_bot_that_switches_its_chat_limit_off_is_still_counted_platform_wide(canary_tenants, platform_limit_of_two):
    from apps.core.ratelimit import RateLimit
    from apps.sessions.limits import message_rate_check

    off = RateLimit(endpoint="chat", enabled=False, limit=1, window_s=60, burst=0, by="ip")
    ip, session = _ip(), str(uuid.uuid4())
    with schema_context(canary_tenants.a.schema_name):
        waits = [message_rate_check(session_id=session, ip=ip, limit=off) for _ in range(3)]
        assert message_rate_check(session_id=session, ip="", limit=off) is None  # no address: nothing to count
    assert waits[:2] == [None, None] and waits[2] is not None


@pytest.mark.django_db
def test_a_bot_cannot_switch_off_or_loosen_the_platforms_limit_on_one_sessions_messages(canary_tenants, settings):
    """`rate-limit-enabled,false` or a huge `rate-limit-api-chat` left one session sending without end (each message
    a turn), with only the platform-wide per-address bucket to stop it: the session is held to
    CHAT_SESSION_MESSAGES_PER_MINUTE_MAX (and its burst) whatever its bot says; the operator may switch it off."""
    from apps.sessions.limits import CHAT_SESSION_MESSAGES_BURST_MAX, message_rate_check

    settings.CHAT_SESSION_MESSAGES_PER_MINUTE_MAX = 3
    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 0  # the address bucket is not what refuses here
    allowed = 3 + CHAT_SESSION_MESSAGES_BURST_MAX
    off = rate_limits_for({"rate-limit-enabled": "false"}, "chat")
    huge = rate_limits_for({"rate-limit-api-chat": "100000", "rate-limit-burst": "0"}, "chat")
    default = rate_limits_for({}, "chat")
    with schema_context(canary_tenants.a.schema_name):
        for limit in (off, huge):
            session = str(uuid.uuid4())
            waits = [message_rate_check(session_id=session, ip=_ip(), limit=limit) for _ in range(allowed + 1)]
            assert waits[:allowed] == [None] * allowed and 10 < waits[-1] <= 20, limit  # one slot every 60/3 s
            assert message_rate_check(session_id=str(uuid.uuid4()), ip=_ip(), limit=limit) is None  # its own
        settings.CHAT_SESSION_MESSAGES_PER_MINUTE_MAX = 0
        session = str(uuid.uuid4())
        assert all(message_rate_check(session_id=session, ip=_ip(), limit=off) is None for _ in range(allowed + 1))
        # A bot's own limit stricter than the platform's (its default, 30 a minute) is the only one counted.
        settings.CHAT_SESSION_MESSAGES_PER_MINUTE_MAX = 60
        before = _session_ceiling_keys()
        assert message_rate_check(session_id=str(uuid.uuid4()), ip=_ip(), limit=default) is None
        assert _session_ceiling_keys() == before


def _session_ceiling_keys() -> set[bytes]:
    return set(get_redis_connection("default").scan_iter(match="rl:*:chat.session.max:*", count=1000))


def test_an_event_refused_by_one_bucket_is_counted_in_none():
    from apps.core.ratelimit import Bucket, rate_check_all

    scope = _scope()
    tight = Bucket(scope + ".tight", "k", limit=1, window_s=3600)
    loose = Bucket(scope + ".loose", "k", limit=2, window_s=3600)
    assert rate_check_all([tight, loose]) is None
    refusal = rate_check_all([loose, tight])
    assert refusal is not None and refusal.bucket == tight and 3590 < refusal.wait_s <= 3600
    assert rate_check_all([loose]) is None, "the refused event used up nothing of the loose bucket"
    assert rate_check_all([loose]) is not None
    with pytest.raises(ValueError, match="twice"):
        rate_check_all([loose, loose])


@pytest.mark.django_db
def test_redis_down_refuses_for_the_tenants_own_limits_never_for_the_platform_backstop_alone(
        canary_tenants, redis_down, settings):
    """A bot or tenant that switched its limits off never depended on the store: an outage of it must not start
    refusing them because of the platform-wide bucket. Where their own limits apply, it fails as before."""
    from apps.core.ratelimit import RateLimit
    from apps.sessions.limits import message_rate_check

    on = RateLimit(endpoint="chat", enabled=True, limit=1, window_s=60, burst=0, by="ip")
    off = RateLimit(endpoint="chat", enabled=False, limit=1, window_s=60, burst=0, by="ip")
    view = _sign_in_view()
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(RateLimitUnavailable):  # refused: store down (the caller says "busy", not "too many")
            message_rate_check(session_id="s", ip="203.0.113.9", limit=on)
        assert message_rate_check(session_id="s", ip="203.0.113.9", limit=off) is None
        assert view(_request("198.51.100.1")).status_code == 503
        limits_off = {"rate-limit-enabled": "false"}
        assert request_rate_check(_request("198.51.100.1"), "api", config_values=limits_off) is None
        settings.RATE_LIMIT_FAIL_OPEN = True
        assert message_rate_check(session_id="s", ip="203.0.113.9", limit=on) is None


def test_ipv4_clients_of_a_dual_stack_listener_are_counted_one_by_one():
    from apps.core.ratelimit import address_bucket

    assert address_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_bucket("::ffff:203.0.113.8") != address_bucket("::ffff:203.0.113.7")
    assert address_bucket("2001:db8:1:2::1") == "2001:db8:1:2::/64"


@pytest.mark.django_db
def test_chat_limits_count_an_ipv6_client_per_64_in_the_tenants_own_buckets(canary_tenants, settings):
    """A client rotating addresses inside its /64 gets no fresh connect or message budget (the platform-wide
    bucket is off here: the tenant's own buckets alone must hold)."""
    from apps.core.ratelimit import RateLimit
    from apps.sessions.limits import CHAT_RATE_IP_FACTOR, connect_rate_check, message_rate_check

    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 0
    prefix = f"2001:db8:{uuid.uuid4().int % 65536:x}:1::"
    chat = RateLimit(endpoint="chat", enabled=True, limit=1, window_s=3600, burst=0, by="ip")
    with schema_context(canary_tenants.a.schema_name):
        assert [connect_rate_check(f"{prefix}{n}", per_minute=2) is None for n in range(1, 4)] == [True, True, False]
        allowed = [message_rate_check(session_id=str(uuid.uuid4()), ip=f"{prefix}{n:x}", limit=chat) is None
                   for n in range(1, CHAT_RATE_IP_FACTOR + 2)]  # a fresh session each time, as a new socket is
        assert allowed == [True] * CHAT_RATE_IP_FACTOR + [False]
