"""HTTP caching of the read endpoints: `ETag`, `Cache-Control`, and `If-None-Match` answered
with 304 Not Modified, for most of them without the database.

What a tag stands for, per endpoint:

- catalog reads (`GET /catalog`, `/catalog/items/{id}`, `.../schema`): the catalog view this
  gateway holds in memory, named by its catalog version and the `catalog` stream version (a mode
  switch changes an item's answer without a new catalog version), and the query parameters.
- a request (`GET /requests/{id}`, `.../status`): the `stream_version` of its read-model row,
  which the answer shows; the row and its actions are read in one snapshot and written by the
  projector in one transaction, so that version names the whole answer even while the row trails
  the stream. With `?as_of=` the answer is rebuilt from the events, and the tag is a digest of it.
- a resource (`GET /resources/{id}`): a digest of the answer, which shows the resource's row and
  the rows of the requests that made and changed it.

No answer depends on who asks, only whether they may see it, so no tag names the caller; the
answers are `private, no-cache`: a client may keep one, and asks again (with the tag) before
using it, and every 304 is decided after the same authorisation as a 200.

`StreamVersions` is what lets a gateway answer a request's or a resource's 304 from memory: the
current tag (and who may see it) of the streams it read lately, forgotten when the projector
says the rows changed. The projector's tables notify `pao_read_versions` with each changed row's
stream and version at commit (migration 0006 of the request service), on the gateway's one
listening connection (`LogWakeups.also_listen`).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from pao.gateway.follows import LogWakeups

log = structlog.get_logger("pao.gateway.caching")

CHANNEL = "pao_read_versions"
#: Every cached answer is the caller's own and is checked with the gateway before each use.
CACHE_CONTROL = "private, no-cache"
#: The most streams whose versions a gateway keeps; the least recently used go first.
MAX_STREAMS = 50_000


def request_key(request_id: str) -> str:
    """A request's entry, as the notifications name it (its stream)."""
    return f"request-{request_id}"


def resource_key(resource_id: str) -> str:
    """A resource's entry, as the notifications name it (its stream)."""
    return f"resource-{resource_id}"


def digest(*parts: Any) -> str:
    """A short, stable digest of JSON-able parts, for tags."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tag(*parts: Any) -> str:
    """A strong entity tag made of the parts (each free of quotes and spaces)."""
    return '"' + "-".join(str(p) for p in parts) + '"'


def matches(request: web.Request, current: str) -> bool:
    """Whether the caller's `If-None-Match` names the current tag (weak comparison, RFC 9110)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == current for t in header.split(","))


def not_modified(current: str) -> web.Response:
    """304: the caller's copy is current; no body."""
    return web.Response(status=304, headers={"ETag": current, "Cache-Control": CACHE_CONTROL})


def answer(request: web.Request, current: str, body: Any) -> web.Response:
    """304 when the caller's copy is current, else the JSON body, tagged."""
    if matches(request, current):
        return not_modified(current)
    return tagged(web.json_response(body), current)


def tagged(response: web.Response, current: str) -> web.Response:
    """The response with its tag and caching rule."""
    response.headers["ETag"] = current
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


@dataclass(frozen=True, slots=True)
class Known:
    """What the gateway last read of a stream: its read-model version (for a resource, the tag
    of the answer, a digest) and the fields that say who may see it (`Viewer.may_see`)."""

    version: str
    visible: dict[str, Any]


@dataclass(slots=True)
class _Record:
    #: the count of notifications heard when the last one about the stream was (-1: none since
    #: the map was emptied)
    touched: int
    #: the stream version the last notification about it named (None: not known)
    notified: int | None
    known: Known | None


class StreamVersions:
    """The current version, and who may see it, of the request and resource streams this gateway
    read lately; bounded, fed by the read path and emptied by the projector's notifications.

    The invariant that makes a 304 without the database safe: an entry is returned by `known`
    only while the listener is connected, and only if no notification of a change to its stream
    arrived since the read it came from began. Every change of a `requests` or `resources` row
    (the projector writes a request's actions with its row, whose version then changes) notifies
    at commit, in commit order, to the listener; a read begins (`reading`) before its snapshot is
    taken, so a commit it did not see is notified after it began: either before it is
    `remember`ed (the entry is refused) or after (the entry is dropped). Notifications sent while
    the listener was down are lost, so the map is emptied on every disconnect and reconnect, and
    reads that began before are refused. A record evicted for room takes its knowledge of a
    change with it, so reads that began before that change are refused too (`_floor`). An entry
    is thus at most as old as the delivery of a notification; a miss reads the database, which
    answers as it would without the tag.
    """

    def __init__(self, wakeups: LogWakeups, *, size: int = MAX_STREAMS) -> None:
        self._wakeups = wakeups
        self._size = size
        self._records: OrderedDict[str, _Record] = OrderedDict()
        #: notifications (and resets) heard so far
        self._heard = 0
        #: reads that began before this count may not be remembered
        self._floor = 0
        wakeups.also_listen(CHANNEL, self.notified, reset=self.reset)

    def __len__(self) -> int:
        return sum(1 for r in self._records.values() if r.known is not None)

    def reading(self) -> int | None:
        """Call before a read: the token `remember` takes (None while the listener is down)."""
        return self._heard if self._wakeups.listening else None

    def remember(
        self, stream: str, token: int | None, known: Known, *, read_at: int | None = None
    ) -> None:
        """Keep what a read begun at `token` found, unless the stream changed meanwhile."""
        if token is None or token < self._floor or not self._wakeups.listening:
            return
        record = self._records.get(stream)
        if record is not None:
            if record.touched > token:
                return  # changed while it was read
            if read_at is not None and record.notified is not None and read_at < record.notified:
                return  # a read behind what was notified
        self._records[stream] = _Record(
            touched=record.touched if record else -1,
            notified=record.notified if record else None,
            known=known,
        )
        self._records.move_to_end(stream)
        self._evict()

    def known(self, stream: str) -> Known | None:
        """The stream's current version and visibility, if this gateway may trust what it knows."""
        if not self._wakeups.listening:
            return None
        record = self._records.get(stream)
        if record is None or record.known is None:
            return None
        self._records.move_to_end(stream)
        return record.known

    def notified(self, payload: str) -> None:
        """A notification of `pao_read_versions`: rows changed."""
        try:
            change = json.loads(payload)
        except ValueError:
            log.warning("unreadable read-version notification; forgetting every version")
            self.reset()
            return
        if change.get("reset"):
            self.reset()
            return
        self._changed(change["stream"], change.get("version"))
        if change.get("resource"):  # a resource's answer lists its requests
            self._changed(resource_key(change["resource"]), None)

    def reset(self) -> None:
        """Forget everything: notifications may have been missed."""
        self._heard += 1
        self._floor = self._heard
        self._records.clear()

    def _changed(self, stream: str, version: int | None) -> None:
        """Drop what is known of the stream; `version` None: it changed to a version not named
        (a resource whose request changed), or it went."""
        self._heard += 1
        record = self._records.get(stream)
        if version is None and record is not None:
            version = record.notified
        self._records[stream] = _Record(touched=self._heard, notified=version, known=None)
        self._records.move_to_end(stream)
        self._evict()

    def _evict(self) -> None:
        while len(self._records) > self._size:
            _, record = self._records.popitem(last=False)
            self._floor = max(self._floor, record.touched)


#: Each gateway's one `StreamVersions`, set up by `create_app`.
VERSIONS = web.AppKey("stream_versions", StreamVersions)
