"""Per-environment settings (the `env` scope of templates) and platform settings (`system`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from pao.shared.settings import Settings


@cache
def _load(path: Path) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of environment name -> settings")
    return data


def environments(settings: Settings) -> dict[str, dict[str, Any]]:
    """Settings by environment name, from PAO_ENVIRONMENTS_FILE (none when unset)."""
    return _load(settings.environments_file) if settings.environments_file else {}


def system_scope(settings: Settings) -> dict[str, Any]:
    """The `system` scope of templates."""
    return {
        "platform_name": settings.platform_name,
        "region": settings.region,
        "jira_url": settings.jira_url or "",
        "gateway_url": settings.public_url or f"http://{settings.http_host}:{settings.http_port}",
    }
