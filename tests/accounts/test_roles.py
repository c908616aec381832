"""Reading roles out of token claims: Zitadel's object, lists, strings, nested paths; unknown names ignored."""

import pytest

from apps.accounts.roles import (
    DEFAULT_ROLE_MAP,
    ZITADEL_ROLES_CLAIM,
    Role,
    console_role_from_claims,
    role_allows,
    role_map_validate,
)


def _role(claims, claim=ZITADEL_ROLES_CLAIM, role_map=DEFAULT_ROLE_MAP):
    return console_role_from_claims(claims, roles_claim=claim, role_map=role_map)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({ZITADEL_ROLES_CLAIM: {"editor": {"1": "acme"}, "viewer": {"1": "acme"}}}, Role.EDITOR),
        ({ZITADEL_ROLES_CLAIM: ["viewer", "admin"]}, Role.ADMIN),
        ({ZITADEL_ROLES_CLAIM: "viewer"}, Role.VIEWER),
        ({ZITADEL_ROLES_CLAIM: {"Admin": {}, "owner": {}}}, None),  # names are exact
        ({ZITADEL_ROLES_CLAIM: 7}, None),
        ({ZITADEL_ROLES_CLAIM: [["admin"]]}, None),
        ({"roles": ["admin"]}, None),  # another claim than the configured one
        ({}, None),
    ],
)
def test_roles_claim_shapes(claims, expected):
    assert _role(claims) == expected


def test_with_an_organisation_only_the_roles_it_granted_count():
    claims = {ZITADEL_ROLES_CLAIM: {"admin": {"org-b": "b.example"}, "viewer": {"org-a": "a.example"},
                                    "editor": {"org-b": "b.example", "org-a": "a.example"}, "owner": "org-a"}}
    assert console_role_from_claims(claims, roles_claim=ZITADEL_ROLES_CLAIM, role_map=DEFAULT_ROLE_MAP,
                                    organization_id="org-a") == Role.EDITOR
    only_b = {ZITADEL_ROLES_CLAIM: {"admin": {"org-b": "b.example"}, "viewer": "org-a"}}
    assert console_role_from_claims(only_b, roles_claim=ZITADEL_ROLES_CLAIM, role_map=DEFAULT_ROLE_MAP,
                                    organization_id="org-a") is None
    assert _role(only_b) == Role.ADMIN  # no organisation given: the names alone, as before


def test_nested_claim_paths_and_custom_maps():
    claims = {"realm_access": {"roles": ["bot-admins", "staff"]}}
    assert _role(claims, "realm_access.roles", {"bot-admins": "editor"}) == Role.EDITOR


def test_role_order():
    assert role_allows(Role.ADMIN, Role.VIEWER) and role_allows(Role.EDITOR, Role.EDITOR)
    assert not role_allows(Role.VIEWER, Role.EDITOR) and not role_allows(None, Role.VIEWER)


def test_role_map_validation():
    assert role_map_validate({"x": "viewer"}) == {"x": "viewer"}
    for bad in ({}, [], {"x": "owner"}, {"": "admin"}):
        with pytest.raises(ValueError):
            role_map_validate(bad)
