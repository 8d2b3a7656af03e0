"""The local stack's access key: generated once, kept under the data directory."""

from __future__ import annotations

import getpass
import os
import secrets
from pathlib import Path

import yaml

from pao.shared.keystore import KeyEntry


def load_or_create_dev_key(data_dir: Path) -> KeyEntry:
    """The dev key of this data directory, created on first use (admin, for one developer)."""
    path = data_dir / "dev-key.yaml"
    if path.exists():
        return KeyEntry.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    user = _user_name()
    entry = KeyEntry(
        access_key_id="PAODEV" + secrets.token_hex(7).upper(),
        secret_access_key=secrets.token_urlsafe(30),
        user=user,
        email=f"{user}@localhost",
        teams=("platform",),
        roles=("admin",),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(
            {
                **entry.model_dump(mode="json", exclude_none=True),
                "secret_access_key": entry.secret_access_key.get_secret_value(),
                "teams": list(entry.teams),
                "roles": list(entry.roles),
            },
            out,
            sort_keys=False,
        )
    return entry


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "developer"
