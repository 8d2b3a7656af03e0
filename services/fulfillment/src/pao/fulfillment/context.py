"""The template context of an action when it runs: the request as submitted, real secrets only
for the executor's own call. Built by the same function that previews use."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from pao.fulfillment.ledger import Fulfillment
from pao.shared.secrets import SecretProvider, resolve_secrets
from pao.spec.explain import templates_of
from pao.spec.rendering import SECRET_MASK, template_context
from pao.spec.variables import parse_template


def secrets_used(spec: Any) -> set[str]:
    """Names of the secrets the templates of an action spec refer to."""
    names: set[str] = set()
    for _, template in templates_of(spec):
        for ref in parse_template(template).references:
            if ref.path[0] == "secrets" and len(ref.path) > 1:
                names.add(ref.path[1])
    return names


def run_context(
    fulfillment: Fulfillment,
    item: dict[str, Any],
    *,
    system: dict[str, Any],
    environments: dict[str, dict[str, Any]],
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every scope, from the pinned request, the outputs so far and those its resource's earlier
    requests recorded; secrets masked unless given."""
    return template_context(
        item,
        fulfillment.inputs,
        user=fulfillment.requester,
        system=system,
        environments=environments,
        request_id=fulfillment.request_id,
        correlation_id=fulfillment.correlation_id or "",
        created_at=fulfillment.submitted_at.isoformat(),
        outputs=fulfillment.outputs,
        environment=fulfillment.environment,
        secrets=secrets,
        kind=fulfillment.kind,
        resource_id=fulfillment.resource_id,
        resource_outputs=fulfillment.resource_outputs,
    )


async def real_secrets(
    item: dict[str, Any], names: set[str], provider: SecretProvider
) -> dict[str, Any]:
    """The named secrets' real values (the others masked): only for the executor's call."""
    declared = item.get("secrets") or {}
    return {
        **dict.fromkeys(declared, SECRET_MASK),
        **await resolve_secrets(provider, declared, names),
    }


def secret_forms(values: Iterable[Any]) -> list[str]:
    """Each secret value as an answer or an error may carry it: as is, base64 (either alphabet,
    with or without padding), URL-encoded and JSON-escaped; to redact them all."""
    forms: set[str] = set()
    for value in values:
        text = str(value)
        if not text or text == SECRET_MASK:
            continue
        raw = text.encode()
        encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        forms |= encoded | {e.rstrip("=") for e in encoded}
        forms |= {text, quote(text, safe=""), quote_plus(text), quote(text)}
        forms |= {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    return sorted(forms)
