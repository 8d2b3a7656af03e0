"""What a gateway trusts of the versions it read: nothing a change may have overtaken."""

from __future__ import annotations

import json
from collections.abc import Callable

from pao.gateway.caching import Known, StreamVersions

SEEN = {"requester": "dana", "owner_team": "payments", "approval": None}


class Listener:
    """The listening connection as StreamVersions sees it: up or down, and what it hears."""

    def __init__(self) -> None:
        self.listening = True
        self.deliver: Callable[[str], None] | None = None
        self.reset: Callable[[], None] | None = None

    def also_listen(
        self, channel: str, deliver: Callable[[str], None], *, reset: Callable[[], None]
    ) -> None:
        assert channel == "pao_read_versions"
        self.deliver, self.reset = deliver, reset

    def hears(self, stream: str, version: int | None, resource: str | None = None) -> None:
        assert self.deliver is not None
        self.deliver(json.dumps({"stream": stream, "version": version, "resource": resource}))


def versions(size: int = 100) -> tuple[StreamVersions, Listener]:
    listener = Listener()
    return StreamVersions(listener, size=size), listener  # type: ignore[arg-type]


def remembered(known: StreamVersions, stream: str, version: int) -> None:
    known.remember(stream, known.reading(), Known(str(version), SEEN), read_at=version)


def test_a_read_is_trusted_until_its_stream_changes() -> None:
    known, listener = versions()
    remembered(known, "request-a", 3)
    assert known.known("request-a") is not None
    assert known.known("request-a").version == "3"  # type: ignore[union-attr]

    listener.hears("request-b", 7)
    listener.hears("request-c", 1, resource="a")
    assert known.known("request-a") is not None
    listener.hears("request-a", 4)
    assert known.known("request-a") is None


def test_a_read_overtaken_by_a_change_is_not_remembered() -> None:
    known, listener = versions()
    token = known.reading()
    listener.hears("request-a", 4)  # committed after the read's snapshot
    known.remember("request-a", token, Known("3", SEEN), read_at=3)
    assert known.known("request-a") is None
    # A read that began after the change is.
    remembered(known, "request-a", 4)
    assert known.known("request-a") is not None


def test_a_read_behind_the_notified_version_is_not_remembered() -> None:
    known, listener = versions()
    listener.hears("request-a", 5)
    known.remember("request-a", known.reading(), Known("4", SEEN), read_at=4)
    assert known.known("request-a") is None


def test_nothing_is_trusted_while_the_listener_is_down_nor_kept_across_it() -> None:
    known, listener = versions()
    remembered(known, "request-a", 3)
    token = known.reading()
    listener.listening = False
    assert known.known("request-a") is None
    assert known.reading() is None
    assert listener.reset is not None
    listener.reset()  # lost; and once more when connected again
    listener.listening = True
    assert known.known("request-a") is None
    known.remember("request-b", token, Known("1", SEEN), read_at=1)  # begun before the loss
    assert known.known("request-b") is None


def test_a_request_change_touches_its_resource() -> None:
    known, listener = versions()
    known.remember("resource-r", known.reading(), Known('"resource-x"', SEEN))
    listener.hears("resource-r", 2)  # a resource entry is a digest: any change drops it
    assert known.known("resource-r") is None
    known.remember("resource-r", known.reading(), Known('"resource-y"', SEEN))
    listener.hears("request-a", 6, resource="r")
    assert known.known("resource-r") is None


def test_the_map_is_bounded_and_eviction_forgets_nothing_unsafely() -> None:
    known, listener = versions(size=2)
    token = known.reading()
    listener.hears("request-a", 2)
    listener.hears("request-b", 2)
    listener.hears("request-c", 2)  # request-a's change is evicted
    known.remember("request-a", token, Known("1", SEEN), read_at=1)  # begun before it
    assert known.known("request-a") is None
    for name in "defg":
        remembered(known, f"request-{name}", 1)
    assert len(known) == 2
    assert known.known("request-g") is not None
    assert known.known("request-d") is None


def test_a_rebuild_forgets_every_version() -> None:
    known, listener = versions()
    remembered(known, "request-a", 3)
    assert listener.deliver is not None
    listener.deliver('{"reset": true}')
    assert known.known("request-a") is None
