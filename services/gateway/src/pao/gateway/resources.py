"""What the gateway's handlers share, as typed application keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiohttp import web

from pao.catalog.bootstrap import CatalogParts
from pao.gateway.follows import LogFollows, LogWakeups
from pao.gateway.sessions import SessionKeys
from pao.shared.eventstore import EventStore
from pao.shared.keystore import Identity, KeyStore
from pao.shared.secrets import SecretProvider
from pao.shared.settings import Settings


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A dependency readiness checks: `probe` returns a short detail, or raises when it is down."""

    name: str
    probe: Callable[[], Awaitable[str]]


SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeyStore)
POOL = web.AppKey("pool", asyncpg.Pool)
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])
CATALOG = web.AppKey("catalog", CatalogParts)
STORE = web.AppKey("store", EventStore)
SECRETS = web.AppKey("secrets", SecretProvider)
FOLLOWS = web.AppKey("log_follows", LogFollows)
WAKEUPS = web.AppKey("log_wakeups", LogWakeups)
SESSIONS = web.AppKey("sessions", SessionKeys)
STS_HTTP = web.AppKey("sts_http", aiohttp.ClientSession)

IDENTITY = web.RequestKey("identity", Identity)
CORRELATION_ID = web.RequestKey("correlation_id", str)
#: the catalog item a command concerns, when only its body names it (a submit), for the audit
AUDITED_ITEM = web.RequestKey("audited_item", str)
