"""WebSocket tenant resolution: ORM calls of a consumer run in the schema of the connection's host.

The probe consumer is a test double for the chat consumer, routed through the real ASGI stack
(gbplatform.asgi.build_application) so the tenant middleware and the database helper are the real ones.
"""

import asyncio

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.urls import path

from apps.tenants.channels import (
    CLOSE_FOREIGN_ORIGIN,
    CLOSE_UNKNOWN_TENANT,
    tenant_database_sync_to_async,
    tenant_group_name,
)
from apps.tenants.selectors import TenantRef

pytestmark = pytest.mark.django_db


class ProbeConsumer(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(await self.read_bot())

    @tenant_database_sync_to_async
    def read_bot(self):
        from apps.bots.models import Bot

        bot = Bot.objects.get(pk=1)
        return {"bot": bot.name, "schema": connection.schema_name}


def _application():
    from gbplatform.asgi import build_application

    return build_application([path("ws/probe", ProbeConsumer.as_asgi())])


def _communicator(host: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(_application(), "/ws/probe", headers=[(b"host", host.encode())])


async def test_interleaved_connections_each_read_their_own_schema(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    comm_a, comm_b = _communicator(a.host), _communicator(b.host)
    assert (await comm_a.connect())[0] and (await comm_b.connect())[0]
    try:
        for _ in range(5):
            # Both requests are in flight at once, then both answers are read: the database thread serves
            # them in turn and must switch schema for each.
            await asyncio.gather(comm_a.send_json_to({}), comm_b.send_json_to({}))
            reply_a, reply_b = await asyncio.gather(comm_a.receive_json_from(), comm_b.receive_json_from())
            assert reply_a == {"bot": a.canary, "schema": a.schema_name}
            assert reply_b == {"bot": b.canary, "schema": b.schema_name}
    finally:
        await comm_a.disconnect()
        await comm_b.disconnect()


async def test_database_thread_is_back_in_public_after_a_consumer_call(canary_tenants):
    from channels.db import database_sync_to_async

    comm = _communicator(canary_tenants.a.host)
    await comm.connect()
    await comm.send_json_to({})
    await comm.receive_json_from()
    await comm.disconnect()
    schema = await database_sync_to_async(lambda: connection.schema_name)()
    assert schema == "public"


@pytest.mark.parametrize("host", ["unknown.test.localhost", "localhost", ""])
async def test_unknown_or_public_host_is_refused(canary_tenants, host):
    comm = _communicator(host)
    connected, code = await comm.connect()
    assert not connected
    assert code == CLOSE_UNKNOWN_TENANT


def test_group_names_differ_per_tenant_for_the_same_room():
    a = TenantRef(id=1, schema_name="a", name="A")
    b = TenantRef(id=2, schema_name="b", name="B")
    assert tenant_group_name(a, "session.42") != tenant_group_name(b, "session.42")
    assert tenant_group_name(a, "x" * 300).__len__() < 100


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (None, True),  # not a browser: no ambient cookies to abuse
        ("http://tenant-a.test.localhost", True),
        # Host names are compared, case-insensitively; scheme and port are not (a proxy in front changes them).
        ("https://TENANT-A.test.localhost:443", True),
        ("http://tenant-b.test.localhost", False),
        ("https://evil.example", False),
        ("null", False),
    ],
)
async def test_browser_handshake_from_another_origin_is_refused(canary_tenants, origin, accepted):
    headers = [(b"host", canary_tenants.a.host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    comm = WebsocketCommunicator(_application(), "/ws/probe", headers=headers)
    connected, code = await comm.connect()
    assert connected is accepted
    if accepted:
        await comm.disconnect()
    else:
        assert code == CLOSE_FOREIGN_ORIGIN
