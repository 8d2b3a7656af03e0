"""The template context of an action when it runs: the request as submitted, real secrets."""

from __future__ import annotations

from typing import Any

from pao.request.aggregate import RequestState
from pao.shared.secrets import SecretProvider, resolve_secrets
from pao.spec.explain import templates_of
from pao.spec.rendering import SECRET_MASK
from pao.spec.variables import parse_template


def secrets_used(spec: Any) -> set[str]:
    """Names of the secrets the templates of an action spec refer to."""
    names: set[str] = set()
    for _, template in templates_of(spec):
        for ref in parse_template(template).references:
            if ref.path[0] == "secrets" and len(ref.path) > 1:
                names.add(ref.path[1])
    return names


def base_context(
    state: RequestState,
    *,
    system: dict[str, Any],
    environments: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Every scope but secrets, from the pinned request."""
    submitted = state.submitted
    assert submitted is not None
    metadata = submitted.item["metadata"]
    return {
        "user": submitted.requester.model_dump(),
        "request": {
            "id": state.request_id,
            "correlation_id": state.correlation_id or "",
            "created_at": state.submitted_at or "",
            "environment": submitted.environment,
            "item_id": submitted.item_id,
            "item_version": submitted.item_version,
        },
        "item": {
            k: metadata.get(k)
            for k in ("id", "name", "version", "category", "owner", "description", "tags")
        },
        "system": system,
        "env": dict(environments.get(submitted.environment) or {}),
        "inputs": submitted.resolved_inputs,
        "outputs": state.outputs,
    }


def masked(context: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The context with secrets shown as the mask: what events and logs may carry."""
    return {**context, "secrets": dict.fromkeys(names, SECRET_MASK)}


async def with_secrets(
    context: dict[str, Any], names: set[str], declared: dict[str, Any], provider: SecretProvider
) -> dict[str, Any]:
    """The context with the real values of the named secrets: only for the executor's call."""
    return {**context, "secrets": await resolve_secrets(provider, declared, names)}
