"""Fixtures of the console tests: signed-in clients of the canary tenants holding a given console role."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ConsoleProfile
from apps.accounts.roles import Role


def user_with_role(tenant, username: str, role: Role | None):
    """A local user of `tenant` holding `role` (None: signed in, but no console access)."""
    with schema_context(tenant.schema_name):
        user = get_user_model().objects.create_user(username=username, password="unused-0123456789")  # noqa: S106
        if role is not None:
            ConsoleProfile.objects.create(user=user, role=role.value)
        return user


def signed_in(tenant, user) -> Client:
    """A client on the tenant's host with `user`'s session (made in the tenant's schema, as a sign-in would)."""
    client = Client(HTTP_HOST=tenant.host)
    with schema_context(tenant.schema_name):
        client.force_login(user, backend="apps.accounts.backends.LocalPasswordBackend")
    return client


@pytest.fixture
def console_client(canary_tenants) -> Callable[..., Client]:
    """console_client(role, tenant=None, username=None) -> a signed-in client (tenant A by default)."""
    made: dict[str, int] = {}

    def make(role: Role | None, tenant=None, username: str | None = None) -> Client:
        tenant = tenant or canary_tenants.a
        made[tenant.host] = made.get(tenant.host, 0) + 1
        name = username or f"{role.value if role else 'norole'}-{made[tenant.host]}"
        return signed_in(tenant, user_with_role(tenant, name, role))

    return make
