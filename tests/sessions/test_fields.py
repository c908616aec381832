"""Message content sealed at rest when the tenant enables it; plaintext otherwise; both readable."""

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.sessions import services
from apps.sessions.fields import SEALED_MARK, tenant_flag_forget
from apps.sessions.models import Message, Role
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _raw(message_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT content FROM chat_message WHERE id = %s", [message_id])
        return cursor.fetchone()[0]


@pytest.fixture
def sealing(canary_tenants):
    schema = canary_tenants.a.schema_name
    Tenant.objects.filter(schema_name=schema).update(encrypt_messages=True)
    tenant_flag_forget()
    yield schema
    Tenant.objects.filter(schema_name=schema).update(encrypt_messages=False)
    tenant_flag_forget()


def test_a_tenant_that_enables_it_stores_messages_sealed(sealing, canary_tenants):
    with schema_context(sealing):
        Bot.objects.create(name="sealed")
        session = services.session_bootstrap(bot_name="sealed")
        secret = "my card is 4111 1111 1111 1111"
        message = Message.objects.create(session=session, index=0, role=Role.USER, content=secret)
        raw = _raw(message.pk)
        assert raw.startswith(SEALED_MARK) and secret not in raw and "4111" not in raw
        assert Message.objects.get(pk=message.pk).content == secret
        # Turning it off keeps what was sealed readable and stores new messages in plaintext.
        Tenant.objects.filter(schema_name=sealing).update(encrypt_messages=False)
        tenant_flag_forget()
        later = Message.objects.create(session=session, index=1, role=Role.USER, content="plain now")
        assert _raw(later.pk) == "plain now"
        assert Message.objects.get(pk=message.pk).content == secret
    with schema_context(canary_tenants.b.schema_name):  # the other tenant did not enable it
        Bot.objects.create(name="plain")
        other = services.session_bootstrap(bot_name="plain")
        row = Message.objects.create(session=other, index=0, role=Role.USER, content="hello")
        assert _raw(row.pk) == "hello"


def test_a_sealed_value_copied_to_another_tenant_does_not_decrypt(sealing, canary_tenants):
    with schema_context(sealing):
        Bot.objects.create(name="sealed2")
        session = services.session_bootstrap(bot_name="sealed2")
        raw = _raw(Message.objects.create(session=session, index=0, role=Role.USER, content="alpha secret").pk)
    with schema_context(canary_tenants.b.schema_name):
        Bot.objects.create(name="thief")
        other = services.session_bootstrap(bot_name="thief")
        row = Message.objects.create(session=other, index=0, role=Role.USER, content="x")
        with connection.cursor() as cursor:
            cursor.execute("UPDATE chat_message SET content = %s WHERE id = %s", [raw, row.pk])
        assert Message.objects.get(pk=row.pk).content == ""
