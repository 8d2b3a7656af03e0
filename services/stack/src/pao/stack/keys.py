"""`pao keys init FILE`: a key store with one admin key of its own, made on first start.

The secret is drawn from `secrets.token_urlsafe` and written only to FILE (mode 0600); the
command prints the access key id and where the file is, never the secret. A file that exists is
kept, so a container that runs this on every start makes the key once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
import yaml

app = typer.Typer(help="The gateway's SigV4 key store.", no_args_is_help=True)


def new_key_store(user: str = "platform-admin", team: str = "platform") -> dict[str, object]:
    """A key store document with one admin key, its id and secret freshly drawn."""
    access_key_id = "PAO" + secrets.token_hex(8).upper()[:17]
    return {
        "keys": [
            {
                "access_key_id": access_key_id,
                "secret_access_key": secrets.token_urlsafe(32),
                "user": user,
                "teams": [team],
                "roles": ["admin"],
            }
        ]
    }


def write_new_key_store(path: Path, **who: str) -> str | None:
    """Write a new key store to `path` unless one is there; the new key's id, or None."""
    if path.exists():
        return None
    document = new_key_store(**who)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# Written by `pao keys init`: an admin key of this installation only.\n")
        yaml.safe_dump(document, handle, sort_keys=False)
    keys = document["keys"]
    assert isinstance(keys, list)
    return str(keys[0]["access_key_id"])


@app.command("init")
def init(
    file: Annotated[Path, typer.Argument(help="Where the key store goes (PAO_KEYS_FILE).")],
    user: Annotated[str, typer.Option(help="The admin key's user.")] = "platform-admin",
) -> None:
    """Write a key store with a new admin key, unless FILE exists already."""
    made = write_new_key_store(file, user=user)
    if made is None:
        typer.echo(f"{file} exists; kept as it is")
    else:
        typer.echo(f"{file}: new admin key {made} for {user} (its secret is in the file only)")
