"""What every `pao` command shares: settings, the key store, errors for people, signals."""

from __future__ import annotations

import asyncio
import signal

import typer

from pao.shared.keystore import KeyStore, KeyStoreError
from pao.shared.settings import Settings


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


def fail(message: str) -> None:
    """End the command with an error a person can act on."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


async def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
