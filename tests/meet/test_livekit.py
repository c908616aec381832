"""LiveKit room names are namespaced by tenant; the browser URL and its CSP sources come from settings."""

import pytest

from apps.meet.livekit import livekit_browser_url, livekit_csp_sources, livekit_room_name, livekit_room_parse


def test_room_names_round_trip_through_the_tenant_namespace():
    assert livekit_room_name("tenant_a", "sales-1") == "tenant_a--sales-1"
    assert livekit_room_parse("tenant_a--sales-1") == ("tenant_a", "sales-1")


@pytest.mark.parametrize(
    "name",
    ["sales", "--sales", "tenant_a--", "Tenant_A--sales", "tenant-a--sales", "tenant_a--sa--les", "a--b c", ""],
)
def test_names_outside_the_namespace_belong_to_no_tenant(name):
    assert livekit_room_parse(name) is None


@pytest.mark.parametrize(
    ("public", "url", "browser", "sources"),
    [
        ("", "https://lk.example.com", "wss://lk.example.com", ("wss://lk.example.com", "https://lk.example.com")),
        ("wss://meet.example.com:7881", "http://livekit:7880", "wss://meet.example.com:7881",
         ("wss://meet.example.com:7881", "https://meet.example.com:7881")),
        ("", "ws://127.0.0.1:7880", "ws://127.0.0.1:7880", ("ws://127.0.0.1:7880", "http://127.0.0.1:7880")),
        ("wss://evil;script-src *", "", "wss://evil;script-src *", ()),
        ("", "", "", ()),
    ],
)
def test_browser_url_and_csp_sources(settings, public, url, browser, sources):
    settings.LIVEKIT_PUBLIC_URL, settings.LIVEKIT_URL = public, url
    assert livekit_browser_url() == browser
    assert livekit_csp_sources() == sources
