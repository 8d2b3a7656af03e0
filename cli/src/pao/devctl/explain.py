"""`devctl request explain`: what happened to a request, why, and what to do about it.

Everything comes from the request's record and log (and, for people who may read them, the
platform's figures for the breaker of the system that failed): the explanation is only a reading
of what the server already keeps, never a second opinion on the request's state.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pao.devctl.context import globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit

#: How many of the last log entries the explanation shows.
LAST_ENTRIES = 8
#: An unfinished request with no new log entry for this long is called stuck.
STUCK_SECONDS = 30 * 60
#: The log is read in pages of at most this many entries (the server's cap).
LOG_PAGE = 500
_KEPT = ("succeeded", "skipped")
_URL = re.compile(r"https?://([^/\s:]+)(?::(\d+))?")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def explain(ctx: typer.Context, request_id: Annotated[str, typer.Argument()]) -> None:
    """Why a request failed or waits, what a retry would run again, and the next command.

    Example:

      devctl request explain 0b9f2c1e-...
    """
    if not _REQUEST_ID.fullmatch(request_id):
        raise CliError(
            "PAO-CLI-004",
            f"{request_id!r} is not a request id",
            "Pass an id as `devctl request list` shows it (letters, digits and dashes).",
            exit_code=2,
        )
    g = globals_of(ctx)
    client = g.client()
    try:
        found = client.request("GET", f"/requests/{request_id}")
        entries = _log(client, request_id)
        failing = _failing_action(found)
        parked = _parked(client) if failing is not None else None
    finally:
        client.close()
    story = explanation(found, entries, parked)
    if g.output is OutputFormat.table:
        show(story)
    else:
        emit(story, g.output)


def _log(client: Any, request_id: str) -> list[dict[str, Any]]:
    """The request's whole log, page after page."""
    entries: list[dict[str, Any]] = []
    while True:
        after = entries[-1]["seq"] if entries else None
        page = client.request("GET", f"/requests/{request_id}/logs", params={"after": after}).get(
            "entries", []
        )
        entries.extend(page)
        if len(page) < LOG_PAGE:
            return entries


def _parked(client: Any) -> list[dict[str, Any]] | None:
    """The systems with work parked behind an open breaker; None when the caller may not see
    the platform's figures."""
    try:
        return client.request("GET", "/stats")["breakers"]["parked"]
    except CliError as exc:
        if exc.status in (401, 403, 404):
            return None
        raise


def _failing_action(found: dict[str, Any]) -> dict[str, Any] | None:
    """The action that failed, or the one waiting out a transient failure."""
    actions = found.get("actions") or []
    for wanted in ("failed", "retrying"):
        for action in actions:
            if action.get("status") == wanted:
                return action
    return None


def system_of(action: dict[str, Any]) -> str:
    """The external system an action calls, named as its breaker is (jira, terraform,
    rest:HOST:PORT; for REST, read from the URL in its error when there is one)."""
    kind = str(action.get("type", ""))
    if kind != "rest":
        return kind
    match = _URL.search(str(action.get("error") or ""))
    if match is None:
        return "rest"
    port = match[2] or ("443" if match[0].startswith("https") else "80")
    return f"rest:{match[1]}:{port}"


def _breaker(system: str, parked: list[dict[str, Any]] | None) -> dict[str, str]:
    """The breaker of `system` as far as the platform's figures tell (work parked behind it)."""
    if parked is None:
        return {
            "state": "unknown",
            "detail": "only the admin and platform roles may read it, in devctl stats",
        }
    for p in parked:
        if p["system"] == system or (system == "rest" and p["system"].startswith("rest:")):
            return {
                "state": "open",
                "detail": f"{p['parked_jobs']} job(s) of {p['system']} parked, "
                f"last at {p['last_parked_at']}",
            }
    return {"state": "closed", "detail": "no work is parked behind it"}


def explanation(
    found: dict[str, Any], entries: list[dict[str, Any]], parked: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The explanation as data: what happened, why, what a retry would do, what to do next."""
    request_id = found["request_id"]
    status = found["status"]
    actions = found.get("actions") or []
    story: dict[str, Any] = {
        "request_id": request_id,
        "item_id": found.get("item_id"),
        "kind": found.get("kind"),
        "status": status,
        "summary": "",
        "last_events": [
            {k: e.get(k) for k in ("seq", "at", "level", "event_type", "message")}
            for e in entries[-LAST_ENTRIES:]
        ],
        "why": None,
        "retry": None,
        "next": None,
    }
    failing = _failing_action(found)
    if failing is not None:
        system = system_of(failing)
        story["why"] = {
            "action": failing["name"],
            "action_status": failing.get("status"),
            "type": failing.get("type"),
            "system": system,
            "attempts": failing.get("attempts"),
            "error": failing.get("error") or found.get("last_error"),
            "request_error": found.get("last_error"),
            "breaker": _breaker(system, parked),
        }
    if status == "completed":
        story["summary"] = f"completed at {found.get('finished_at')}: nothing to explain"
        return story
    if status == "aborted":
        story["summary"] = f"aborted: {found.get('last_error')}"
        story["next"] = {
            "command": f"devctl request submit {found.get('item_id')} ...",
            "why": "an aborted request cannot be retried; request the item again",
        }
        return story
    if status == "failed":
        story["summary"] = f"failed: {found.get('last_error')}"
        story["retry"] = {
            "runs_again": [a["name"] for a in actions if a["status"] == "failed"],
            "then_runs": [a["name"] for a in actions if a["status"] not in (*_KEPT, "failed")],
            "keeps": [a["name"] for a in actions if a["status"] in _KEPT],
            "note": "each failed action starts again from its first attempt"
            + (
                "; a failed JIRA step opens a new issue"
                if any(a["status"] == "failed" and a.get("type") == "jira" for a in actions)
                else ""
            ),
        }
        story["next"] = _after_failure(request_id, story["why"])
        return story
    story["summary"], story["next"] = _waiting(found, entries, failing)
    return story


def _after_failure(request_id: str, why: dict[str, Any] | None) -> dict[str, str]:
    retry = f"devctl request retry {request_id}"
    if why is not None and why["breaker"]["state"] == "open":
        return {
            "command": retry,
            "why": f"{why['system']} is out (its breaker is open): retry once it is back",
        }
    return {"command": retry, "why": "run the failed actions again, keep the ones that succeeded"}


def _waiting(
    found: dict[str, Any], entries: list[dict[str, Any]], failing: dict[str, Any] | None
) -> tuple[str, dict[str, str]]:
    """Summary and next step of a request that has not ended."""
    request_id, status = found["request_id"], found["status"]
    abort = f"devctl request abort {request_id}"
    actions = found.get("actions") or []
    manual = next((a for a in actions if a["status"] == "awaiting_manual"), None)
    if manual is not None:
        key = (manual.get("outputs") or {}).get("key", "?")
        url = (manual.get("outputs") or {}).get("url", "?")
        return (
            f"waits for people: {manual['name']} has ticket {key} open",
            {"command": f"wait: ticket {key} is open at {url}", "why": f"or stop it: {abort}"},
        )
    if status == "awaiting_approval":
        approval = found.get("approval") or {}
        approvers = approval.get("approvers") or {}
        who = ", ".join(f"{kind} {', '.join(names)}" for kind, names in approvers.items() if names)
        return (
            f"waits for approval by {who or 'the approvers'}",
            {"command": "wait: for the approval", "why": f"or stop it: {abort}"},
        )
    if failing is not None:
        retry_at = next(
            (
                (e.get("data") or {}).get("next_attempt_at")
                for e in reversed(entries)
                if e.get("event_type") == "ActionRetryScheduled"
            ),
            None,
        )
        return (
            f"{failing['name']} failed for now ({failing.get('error')}); it runs again"
            + (f" at {retry_at}" if retry_at else ""),
            {"command": "wait: PAO retries it by itself", "why": f"or stop it: {abort}"},
        )
    idle = _idle_seconds(entries)
    if idle is not None and idle > STUCK_SECONDS:
        return (
            f"{status}, with nothing logged for {idle / 60:.0f} min: it looks stuck",
            {
                "command": f"devctl request escalate {request_id} --reason '...'",
                "why": f"the owning team is told; or stop it: {abort}",
            },
        )
    running = next((a["name"] for a in actions if a["status"] == "running"), None)
    return (
        f"{status}" + (f": {running} is running" if running else ""),
        {"command": f"wait: devctl request status {request_id} --watch", "why": abort},
    )


def _idle_seconds(entries: list[dict[str, Any]]) -> float | None:
    if not entries:
        return None
    try:
        last = datetime.fromisoformat(str(entries[-1]["at"]))
    except ValueError:
        return None
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return (datetime.now(UTC) - last).total_seconds()


def show(story: dict[str, Any]) -> None:
    """The explanation for people: a few labelled lines."""

    def say(text: str, style: str | None = None) -> None:
        console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    say(
        f"request {story['request_id']} ({story['item_id']}, {story['kind']}): {story['status']}",
        "bold",
    )
    say(story["summary"])
    if story["status"] == "completed":
        return
    if story["last_events"]:
        say("what happened:")
        for e in story["last_events"]:
            say(f"  {str(e['at'])[:19]} {e['level']:<7} {e['message']}")
    why = story["why"]
    if why is not None:
        failed = "failed for now" if why["action_status"] == "retrying" else "failed"
        say(
            f"why: {why['action']} ({why['type']} action, calls {why['system']}) {failed} after "
            f"{why['attempts']} attempt(s): {why['error']}",
            "red",
        )
        breaker = why["breaker"]
        say(f"  breaker of {why['system']}: {breaker['state']} ({breaker['detail']})")
    retry = story["retry"]
    if retry is not None:
        say(f"a retry runs again: {', '.join(retry['runs_again']) or '-'}")
        if retry["then_runs"]:
            say(f"  then, not run yet: {', '.join(retry['then_runs'])}")
        say(f"  and keeps (with their outputs): {', '.join(retry['keeps']) or '-'}")
        say(f"  ({retry['note']})")
    step = story["next"]
    if step is not None:
        say(f"next: {step['command']}", "bold")
        say(f"  ({step['why']})")
