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


def load_keys(settings: Settings) -> KeyStore:
    """The key store named by the settings (empty without one); a bad file ends the command."""
    if settings.keys_file is None:
        return KeyStore()
    try:
        return KeyStore.from_file(settings.keys_file)
    except KeyStoreError as exc:
        fail(str(exc))
        raise


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
