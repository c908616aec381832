"""Security headers: a strict CSP (HTMX from our origin, no inline script, no eval) on tenant pages and on
the public host's admin, and the configured extra sources are checked at start-up."""

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from apps.compliance.middleware import content_security_policy, csp_extra_sources_parse

pytestmark = pytest.mark.django_db


def _directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def _assert_hardened(response, host: str) -> None:
    csp = _directives(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"] and csp["form-action"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", f"ws://{host}"]
    assert "unsafe" not in response["Content-Security-Policy"]
    assert "camera=()" in response["Permissions-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_tenant_pages_carry_the_headers_and_no_inline_style_or_script(canary_tenants):
    host = canary_tenants.a.host
    client = Client(HTTP_HOST=host)
    for path in ("/", "/accounts/login/"):
        response = client.get(path)
        assert response.status_code == 200
        _assert_hardened(response, host)
        html = response.content.decode()
        assert "<style" not in html and "<script>" not in html and " style=" not in html
    assert client.get("/api/bots")["Content-Security-Policy"]


def test_public_admin_login_renders_under_the_policy(canary_tenants):
    host = settings.PLATFORM_PUBLIC_DOMAIN
    response = Client(HTTP_HOST=host).get("/admin/login/")
    assert response.status_code == 200
    _assert_hardened(response, host)
    html = response.content.decode()
    # Django 5.2's admin login has no inline script or style; everything comes from /static/.
    assert "<script>" not in html and "<style" not in html and " style=" not in html


def test_extra_sources_are_added_and_validated():
    extra = csp_extra_sources_parse(["img-src https://cdn.example.com", "connect-src https://api.example.com"])
    assert extra == {"img-src": ("https://cdn.example.com",), "connect-src": ("https://api.example.com",)}
    policy = content_security_policy(extra=extra, websocket_host="a.example", secure=True)
    assert "img-src 'self' data: https://cdn.example.com;" in policy
    assert "connect-src 'self' https://api.example.com wss://a.example;" in policy
    for bad in (
        ["script-src 'unsafe-eval'"],
        ["script-src 'unsafe-inline'"],
        ["connect-src *"],
        ["img-src https://a.example;script-src"],
        ["frame-ancestors https://a.example"],
        ["img-src"],
    ):
        with pytest.raises(ImproperlyConfigured):
            csp_extra_sources_parse(bad)


def test_a_forged_host_never_reaches_the_policy():
    policy = content_security_policy(extra={}, websocket_host="evil.example; script-src *", secure=False)
    assert "evil" not in policy and "script-src 'self';" in policy
