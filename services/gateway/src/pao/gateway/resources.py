"""What the gateway's handlers share, as typed application keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiohttp import web

from pao.catalog.bootstrap import CatalogParts
from pao.gateway.follows import LogFollows, LogWakeups
from pao.gateway.portal.auth import PortalAuth, PortalSession
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
#: what `read_pool` hands out: the reader endpoint's pool, or POOL when there is none
READ_POOL = web.AppKey("read_pool", asyncpg.Pool)
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])
CATALOG = web.AppKey("catalog", CatalogParts)
STORE = web.AppKey("store", EventStore)
SECRETS = web.AppKey("secrets", SecretProvider)
FOLLOWS = web.AppKey("log_follows", LogFollows)
WAKEUPS = web.AppKey("log_wakeups", LogWakeups)
SESSIONS = web.AppKey("sessions", SessionKeys)
STS_HTTP = web.AppKey("sts_http", aiohttp.ClientSession)
PORTAL = web.AppKey("portal", PortalAuth)

IDENTITY = web.RequestKey("identity", Identity)
CORRELATION_ID = web.RequestKey("correlation_id", str)
#: the portal session a browser's call came with (absent for signed calls)
BROWSER_SESSION = web.RequestKey("browser_session", PortalSession)
#: the catalog item a command concerns, when only its body names it (a submit), for the audit
AUDITED_ITEM = web.RequestKey("audited_item", str)


def read_pool(app: web.Application) -> asyncpg.Pool:
    """The pool a query over many rows reads: Aurora's reader (PAO_DATABASE_READ_URL) if set.

    The rule: lists, searches and figures (GET /requests, /resources, /approvals, /audit,
    /stats) may read a replica a few milliseconds behind, as they already trail the event store
    by a projection's delay. Everything a caller reads back by id (a request, its status, logs,
    plan, history, a resource) and everything a command reads stays on the writer (`POOL`), so
    a client sees at once the request it just submitted or changed.
    """
    return app[READ_POOL]
