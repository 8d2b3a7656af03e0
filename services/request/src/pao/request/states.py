"""Request states kept in memory and brought up to date with only the events they lack.

Consumers and the fulfilment worker look at a request on every event; folding its whole stream
each time (and decoding the pinned item definition each time) would cost more than the work
itself. Reads still go to the store, for the events after the cached version only, so a state is
never stale; callers get their own copy.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import asyncpg

from pao.request.aggregate import RequestState, stream_of
from pao.shared.eventstore import EventStore


class RequestStates:
    """A bounded cache of request states over an event store."""

    def __init__(self, store: EventStore, *, capacity: int = 10_000) -> None:
        self.store = store
        self._capacity = capacity
        self._states: OrderedDict[str, RequestState] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def load(
        self, request_id: str, *, conn: asyncpg.Connection | None = None
    ) -> RequestState:
        """The request as the store has it now (call it before writing in a transaction: a
        state read after the transaction's own appends could cache events that roll back)."""
        lock = self._locks.setdefault(request_id, asyncio.Lock())
        async with lock:
            cached = self._states.get(request_id)
            state = cached.copy() if cached is not None else RequestState(request_id)
            for envelope in await self.store.read_stream(
                stream_of(request_id), from_version=state.version + 1, conn=conn
            ):
                state.apply(envelope)
            if state.exists:
                self._states[request_id] = state.copy()
                self._states.move_to_end(request_id)
                while len(self._states) > self._capacity:
                    evicted, _ = self._states.popitem(last=False)
                    self._locks.pop(evicted, None)
            return state
