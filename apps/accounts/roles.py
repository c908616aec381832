"""Console roles (viewer < editor < admin) and how an OIDC token's role claim maps onto them.

Failure modes prevented:
- A provider role name that merely resembles ours granting access: only names listed in the tenant's
  role map count; anything else is ignored, and a user with no mapped role gets no console access.
- A malformed claim (a number, a nested list) granting something by accident: only the shapes providers
  actually send are read (Zitadel: an object whose keys are role names; others: a list or a string).
- A role granted by another organisation counting on a tenant bound to one (a shared Zitadel where a user
  of A also holds B's admin role): with an organisation given, a role in Zitadel's object shape counts only
  when that organisation granted it ({role: {org id: domain}}).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models

# Zitadel puts a project's roles under this claim: {"<role>": {"<org id>": "<org domain>"}, ...}.
ZITADEL_ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
# Zitadel names the user's organisation in this claim when the scope of the same name is asked for.
ZITADEL_RESOURCE_OWNER_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
ZITADEL_RESOURCE_OWNER_SCOPE = "urn:zitadel:iam:user:resourceowner"
# Asking for this scope with an organisation id makes Zitadel sign the user in within that organisation (its
# login policy; users of other organisations are stopped at the provider, before our own check of the claim).
ZITADEL_ORG_SCOPE_PREFIX = "urn:zitadel:iam:org:id:"
# A role claim with more names than this is not a real user's roles; reading it all would only cost time.
MAX_ROLE_NAMES = 200
# A provider role name longer than this is refused in a role map (they are short keys in practice).
MAX_ROLE_NAME_LENGTH = 200


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    EDITOR = "editor", "Editor"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}
DEFAULT_ROLE_MAP = {"admin": Role.ADMIN.value, "editor": Role.EDITOR.value, "viewer": Role.VIEWER.value}


def role_allows(actual: Role | str | None, required: Role | str) -> bool:
    """Whether a user holding `actual` may do what needs `required` (None holds nothing)."""
    if actual is None or actual == "":
        return False
    return ROLE_RANK[Role(actual)] >= ROLE_RANK[Role(required)]


def role_highest(roles: Iterable[Role]) -> Role | None:
    ranked = sorted(set(roles), key=lambda role: ROLE_RANK[role])
    return ranked[-1] if ranked else None


def role_map_validate(role_map: Any) -> dict[str, str]:
    """The role map as stored: {provider role name: console role}. ValueError says what is wrong."""
    if not isinstance(role_map, Mapping) or not role_map:
        raise ValueError("the role map must be a non-empty object of {provider role: admin|editor|viewer}")
    cleaned = {}
    for name, console_role in role_map.items():
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_ROLE_NAME_LENGTH:
            raise ValueError(f"provider role name {name!r} must be 1 to {MAX_ROLE_NAME_LENGTH} characters")
        if console_role not in Role.values:
            raise ValueError(f"provider role {name!r} maps to {console_role!r}; use one of {', '.join(Role.values)}")
        cleaned[name] = console_role
    return cleaned


def claim_at_path(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named `path`: the exact key first (Zitadel's names contain colons and dots), else a dotted
    walk through nested objects (`realm_access.roles`)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def provider_role_names(value: Any, *, organization_id: str = "") -> list[str]:
    """Role names in a claim value: keys of an object (Zitadel), strings of a list, or one string. With
    `organization_id`, an object's role counts only when its grants ({org id: org domain}) name that
    organisation; lists and strings carry no organisation (the resource-owner check alone applies to them)."""
    if isinstance(value, Mapping):
        names = [name for name, grants in list(value.items())[:MAX_ROLE_NAMES]
                 if not organization_id or (isinstance(grants, Mapping) and organization_id in grants)]
    elif isinstance(value, list):
        names = value
    elif isinstance(value, str):
        names = [value]
    else:
        return []
    return [name for name in names[:MAX_ROLE_NAMES] if isinstance(name, str)]


def console_role_from_claims(
    claims: Mapping[str, Any], *, roles_claim: str, role_map: Mapping[str, str], organization_id: str = ""
) -> Role | None:
    """The highest console role the token's roles map to, or None (no console access). With
    `organization_id` (the tenant's Zitadel organisation), only roles that organisation granted count."""
    names = provider_role_names(claim_at_path(claims, roles_claim), organization_id=organization_id)
    return role_highest(Role(role_map[name]) for name in names if role_map.get(name) in Role.values)
