"""What every `pao` command shares: settings, the key store, errors for people, signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from enum import StrEnum
from typing import Any

import typer

from pao.shared.keystore import KeyStore, KeyStoreError
from pao.shared.settings import Settings


class Output(StrEnum):
    """How a command reports: lines for people, or one JSON document."""

    text = "text"
    json = "json"


def settings_with(**overrides: object) -> Settings:
    """Settings from the environment, with the options given on the command line."""
    settings = Settings()
    values = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=values) if values else settings


#: How the example files (deploy/keys.example.yaml, compose.yaml) mark a value to replace.
EXAMPLE_MARKER = "change-me"


def load_keys(settings: Settings) -> KeyStore:
    """The key store named by the settings (empty without one); a bad file, or one that still
    holds an example secret, ends the command."""
    refuse_example_secrets(settings)
    if settings.keys_file is None:
        return KeyStore()
    try:
        keys = KeyStore.from_file(settings.keys_file)
    except KeyStoreError as exc:
        fail(str(exc))
        raise
    for entry in keys.entries():
        if entry.secret_access_key.get_secret_value().startswith(EXAMPLE_MARKER):
            fail(
                f"{settings.keys_file}: key {entry.access_key_id} still has the example secret; "
                "give every key its own secret (`pao keys init FILE` writes a store with a new "
                "admin key)"
            )
    return keys


def refuse_example_secrets(settings: Settings) -> None:
    """End the command when a shared secret of the settings is still an example value: anyone
    who read the example could sign webhooks or pose as API Gateway."""
    for name in ("github_webhook_secret", "apigateway_secret"):
        value = getattr(settings, name)
        if isinstance(value, str) and value.startswith(EXAMPLE_MARKER):
            fail(
                f"PAO_{name.upper()} is still the example value; set a secret of your own "
                "(e.g. `openssl rand -base64 32`) or leave it unset"
            )


def running_stack(settings: Settings) -> dict[str, Any] | None:
    """The stack.json of a `pao up` running on this data dir, or None (none, or it died)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stack = json.loads((settings.data_dir / "stack.json").read_text(encoding="utf-8"))
        os.kill(int(stack["pid"]), 0)
        return dict(stack)
    return None


def fail(message: str) -> None:
    """End the command with an error a person can act on."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


async def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
