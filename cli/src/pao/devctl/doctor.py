"""`devctl doctor`: what stands between this machine and a working PAO, one check per line.

The checks run in order and each later one needs what the earlier ones found: with no endpoint
nothing can be asked, with an endpoint that does not answer only the local credentials can be
looked at. A check that cannot run says so ("skipped") and why, instead of failing twice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import typer

from pao.devctl.context import Globals, globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit
from pao.devctl.version import API_VERSION, __version__, server_mismatch

if TYPE_CHECKING:
    from pao.devctl.client import Found, PaoClient, Where

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
#: A doctor waits less than a command: an endpoint that does not answer in this long is down.
PROBE_TIMEOUT = 5.0
#: The gateway refuses signatures made further than this from its clock (PAO_CLOCK_SKEW_SECONDS'
#: default); doctor warns from a fifth of it, while there is still time to fix the clock.
SERVER_SKEW_SECONDS = 300
WARN_SKEW_SECONDS = 60
NETWORK_CHECKS = ("signature", "clock", "readiness", "version")
_STYLE = {OK: "green", WARN: "yellow", FAIL: "red", SKIPPED: "dim"}


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, how it went, and what to do when it did not."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def doctor(ctx: typer.Context) -> None:
    """Check the endpoint, credentials, signature, clock, server readiness and versions; exit 1
    when a check fails.

    Each check is one line: ok, warn, fail (with a fix) or skipped (with the reason).

    Examples:

      devctl doctor

      devctl -o json doctor
    """
    g = globals_of(ctx)
    checks = run_checks(g)
    if g.output is OutputFormat.table:
        show(checks)
    else:
        emit([asdict(c) for c in checks], g.output)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)


def run_checks(g: Globals) -> list[Check]:
    """Every check, in order; none raises."""
    from pao.devctl.client import PaoClient, Target, find_credentials, locate

    try:
        where = locate(
            endpoint=g.endpoint, profile_name=g.profile, region=g.region, role_arn=g.role_arn
        )
    except CliError as exc:
        return [
            Check("endpoint", FAIL, exc.message, exc.suggestion),
            Check("credentials", SKIPPED, "no endpoint is configured"),
            *_skipped(NETWORK_CHECKS, "no endpoint is configured"),
        ]
    public = PaoClient(
        Target(where.endpoint, where.region, None),
        verbose=g.verbose,
        debug=g.debug,
        timeout=PROBE_TIMEOUT,
    )
    try:
        reached, clock = _endpoint(public, where)
        try:
            found: Found | None = find_credentials(where)
        except CliError as exc:
            found = None
            credentials = Check("credentials", FAIL, exc.message, exc.suggestion)
        else:
            credentials = Check("credentials", OK, f"key {found.key_id} from {found.source}")
        checks = [reached, credentials]
        if reached.status == FAIL:
            return [*checks, *_skipped(NETWORK_CHECKS, "the endpoint does not answer")]
        signed, verified = _signature(g, where, found)
        readiness = _readiness(signed or public)
        if signed is not None:
            signed.close()
        return [*checks, verified, clock, *readiness, _version(public)]
    finally:
        public.close()


def _skipped(names: tuple[str, ...], reason: str) -> list[Check]:
    return [Check(name, SKIPPED, reason) for name in names]


def _endpoint(public: PaoClient, where: Where) -> tuple[Check, Check]:
    """Does the endpoint answer as a PAO gateway; and the clock check, from the same answer."""
    before = time.time()
    try:
        response = public.send("GET", "/health")
    except CliError as exc:
        failed = Check(
            "endpoint", FAIL, f"{exc.message} (from {where.endpoint_from})", exc.suggestion
        )
        return failed, Check("clock", SKIPPED, "the endpoint does not answer")
    after = time.time()
    ms = (after - before) * 1000
    if response.status_code != 200 or _json(response).get("status") != "ok":
        return (
            Check(
                "endpoint",
                FAIL,
                f"{where.endpoint} answered {response.status_code} to GET /api/v1/health: "
                "not a PAO gateway",
                "Point --endpoint (or PAO_ENDPOINT, or the profile) at the gateway's base URL, "
                "without /api/v1.",
            ),
            Check("clock", SKIPPED, "the endpoint is not a PAO gateway"),
        )
    reached = Check(
        "endpoint", OK, f"{where.endpoint} answers ({ms:.0f} ms), from {where.endpoint_from}"
    )
    return reached, clock_check(response.headers.get("Date"), (before + after) / 2)


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def clock_check(date_header: str | None, local: float) -> Check:
    """This machine's clock against the gateway's, from the Date header of an answer."""
    if not date_header:
        return Check("clock", WARN, "the gateway sent no Date header; the skew is unknown")
    try:
        server = parsedate_to_datetime(date_header).astimezone(UTC)
    except (TypeError, ValueError):
        return Check("clock", WARN, f"the gateway's Date header is unreadable: {date_header!r}")
    skew = datetime.fromtimestamp(local, UTC) - server
    seconds = skew.total_seconds()
    # The Date header has whole seconds: under 2 s apart is as close as it can tell.
    if abs(seconds) < 2:
        return Check("clock", OK, "within a second or two of the gateway's")
    way = "ahead of" if seconds > 0 else "behind"
    detail = f"this machine's clock is {abs(seconds):.0f} s {way} the gateway's"
    fix = "Sync the clock with NTP (e.g. `timedatectl set-ntp true`, or your OS's time settings)."
    if abs(seconds) >= SERVER_SKEW_SECONDS:
        refused = f"the gateway refuses signatures beyond {SERVER_SKEW_SECONDS} s by default"
        return Check("clock", FAIL, f"{detail}; {refused}", fix)
    if abs(seconds) >= WARN_SKEW_SECONDS:
        limit = f"signatures are refused beyond {SERVER_SKEW_SECONDS} s by default"
        return Check("clock", WARN, f"{detail}; {limit}", fix)
    return Check("clock", OK, detail)


def _signature(g: Globals, where: Where, found: Found | None) -> tuple[PaoClient | None, Check]:
    """Do the credentials verify (GET /auth/whoami)? The signed client when they do."""
    from pao.devctl.client import PaoClient, target_at

    if found is None:
        return None, Check("signature", SKIPPED, "no credentials to sign with")
    client: PaoClient | None = None
    try:
        target = target_at(where, found, verbose=g.verbose)
        client = PaoClient(target, verbose=g.verbose, debug=g.debug, timeout=PROBE_TIMEOUT)
        me = client.request("GET", "/auth/whoami")
    except CliError as exc:
        if client is not None:
            client.close()
        fix = " ".join(
            part
            for part in (exc.suggestion, f"The key {found.key_id} comes from {found.source}.")
            if part
        )
        return None, Check("signature", FAIL, f"{exc.code}: {exc.message}", fix)
    teams = ", ".join(me.get("teams") or []) or "none"
    roles = ", ".join(me.get("roles") or []) or "none"
    return client, Check(
        "signature",
        OK,
        f"verified: the gateway sees {me.get('user')} (teams {teams}; roles {roles})",
    )


def _readiness(client: PaoClient) -> list[Check]:
    """One check per dependency the gateway's readiness probe names."""
    try:
        answer = client.request("GET", "/health/ready", ok_statuses=(503,))
    except CliError as exc:
        return [Check("readiness", FAIL, f"{exc.code}: {exc.message}", exc.suggestion)]
    parts = (answer or {}).get("checks") or []
    if not parts:
        return [Check("readiness", WARN, "the gateway names no dependency to check")]
    checks = []
    for part in parts:
        latency = f" ({part['latency_ms']:.0f} ms)" if part.get("latency_ms") is not None else ""
        if part.get("ok"):
            checks.append(Check(f"ready: {part['name']}", OK, f"{part['detail']}{latency}"))
        else:
            checks.append(
                Check(
                    f"ready: {part['name']}",
                    FAIL,
                    f"{part['detail']}{latency}",
                    f"PAO cannot serve requests until its {part['name']} answers; tell the "
                    "team that runs PAO (`devctl health ready` shows the same).",
                )
            )
    return checks


def _version(public: PaoClient) -> Check:
    """devctl's version against the server's, by the rule `devctl version` applies."""
    try:
        server = public.request("GET", "/version")
    except CliError as exc:
        return Check("version", FAIL, f"{exc.code}: {exc.message}", exc.suggestion)
    return version_check(server or {})


def version_check(server: dict[str, Any]) -> Check:
    """The version check of a `GET /version` answer (pao.devctl.version's rule)."""
    both = f"devctl {__version__}, server {server.get('version') or '?'}"
    mismatch = server_mismatch(server.get("version"), server.get("api_version"))
    if mismatch is None:
        return Check("version", OK, f"{both} (API {server.get('api_version') or API_VERSION})")
    why, _, advice = mismatch.partition("; ")
    fix = (
        advice[:1].upper() + advice[1:] + "."
        if advice
        else "Install the devctl released with the server."
    )
    return Check("version", FAIL, f"{both}: {why}", fix)


def show(checks: list[Check]) -> None:
    """One line per check, its fix under it, and a count at the end."""
    width = max(len(c.name) for c in checks)
    for c in checks:
        console.print(
            f"{c.status:<8}{c.name:<{width + 2}}{c.detail}",
            style=_STYLE[c.status],
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if c.fix:
            console.print(
                f"{'':<8}{'':<{width + 2}}fix: {c.fix}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    console.print(
        f"{failed} failed, {warned} warning(s), {len(checks)} checks",
        style="bold",
        markup=False,
        highlight=False,
    )
