"""How many log streams (`GET /requests/{id}/logs?follow=true`) a gateway holds open.

Each stream holds a connection and polls the read model until its request ends, which may be
never; without a bound, one caller could open streams until the gateway or the database gives
out. A stream counts from its start until it closes, per user and in total.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError

#: What a refused caller is told to wait: streams end when their request does, or time out.
RETRY_AFTER_SECONDS = 10


class LogFollows:
    """The open log streams, per user and in total, each bounded."""

    def __init__(self, *, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._by_user: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._by_user.values())

    @contextlib.contextmanager
    def held(self, user: str) -> Iterator[None]:
        """Count one stream of `user` while the block runs; PaoError (429) past a bound."""
        if self.open >= self.total:
            raise self._refused("the gateway", self.total)
        if self._by_user[user] >= self.per_user:
            raise self._refused("you", self.per_user)
        self._by_user[user] += 1
        try:
            yield
        finally:
            self._by_user[user] -= 1
            if self._by_user[user] <= 0:
                del self._by_user[user]

    @staticmethod
    def _refused(who: str, bound: int) -> PaoError:
        return PaoError(
            errors.TOO_MANY_LOG_FOLLOWS,
            f"{who} already follow{'s' if who == 'the gateway' else ''} {bound} log streams, "
            "the most allowed",
            details=[ErrorDetail(field="follow", message=f"at most {bound} at once")],
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
