"""Authorisation rules shared by the routes (ARCHITECTURE §6)."""

from __future__ import annotations

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.shared.keystore import Identity

#: Roles that may operate the platform itself (refresh the catalog, ...).
PLATFORM_ROLES = frozenset({"admin", "platform"})


def require_platform_role(identity: Identity, action: str) -> None:
    """Only admins and platform operators may `action`."""
    if not PLATFORM_ROLES & set(identity.roles):
        raise PaoError(
            errors.FORBIDDEN,
            f"{identity.user} may not {action}: it needs the admin or platform role",
        )


def require_admin_or_owner(identity: Identity, owner_team: str, action: str) -> None:
    """Only admins and members of the owning team may `action`."""
    if not identity.is_admin and owner_team not in identity.teams:
        raise PaoError(
            errors.FORBIDDEN,
            f"{identity.user} may not {action}: it needs the admin role or membership of "
            f"{owner_team}",
            details=[ErrorDetail(field="owner", message=owner_team)],
        )
