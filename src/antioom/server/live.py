"""Imports in flight on this server: their latest state, cancellation, and change feeds.

The engine runs in a worker thread and reports through :meth:`Registry.publish_threadsafe`.
Every published state goes into a bounded log with a sequence number; a watcher (an SSE
stream) reads the entries after the last one it saw, keeps only the newest state per import,
and sleeps ``interval_s`` between rounds. A slow watcher therefore skips intermediate states
instead of queueing them, and the final state of an import is never skipped.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from antioom.engine.source import ByteChannel
from antioom.errors import ImportCancelled

FINAL = ("completed", "failed", "aborted", "interrupted")
LOG_ENTRIES = 4096


@dataclass
class LiveImport:
    id: str
    channel: ByteChannel
    cancel: threading.Event = field(default_factory=threading.Event)
    state: dict[str, Any] = field(default_factory=dict)

    def stop(self, reason: str) -> None:
        """Stop at the next batch boundary, waking an engine blocked on an empty channel (the
        client may have stopped sending) and refusing further bytes."""
        self.cancel.set()
        self.channel.abandon()
        self.channel.close(ImportCancelled(reason))


class Registry:
    """Live imports of this process, and the cap on how many run at once."""

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self.imports: dict[str, LiveImport] = {}
        self.seq = 0
        self._log: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=LOG_ENTRIES)
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
            self._loop = asyncio.get_running_loop()
        return self._changed

    def try_start(self, live: LiveImport) -> bool:
        """Register ``live`` if a slot is free (call on the event loop)."""
        self._condition()
        if len(self.imports) >= self.max_concurrent or live.id in self.imports:
            return False
        self.imports[live.id] = live
        return True

    def finish(self, import_id: str) -> None:
        self.imports.pop(import_id, None)

    async def publish(self, import_id: str, state: dict[str, Any]) -> None:
        live = self.imports.get(import_id)
        if live is not None:
            live.state = state
        self.seq += 1
        self._log.append((self.seq, import_id, state))
        condition = self._condition()
        async with condition:
            condition.notify_all()

    def publish_threadsafe(self, import_id: str, state: dict[str, Any]) -> None:
        """Publish from the engine's thread."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.publish(import_id, state), self._loop)

    async def watch(
        self, import_id: str | None, interval_s: float, *, after: int
    ) -> AsyncIterator[dict[str, Any]]:
        """States published after sequence ``after`` (of one import, or all), newest per import
        per round. For one import, it ends with that import's final state."""
        condition = self._condition()
        while True:
            newest: dict[str, dict[str, Any]] = {}
            for seq, entry_id, state in self._log:
                if seq > after and (import_id is None or entry_id == import_id):
                    if newest.get(entry_id, {}).get("status") not in FINAL:
                        newest[entry_id] = state
                    after = seq
            for state in newest.values():
                yield state
                if import_id is not None and state.get("status") in FINAL:
                    return
            await asyncio.sleep(interval_s)
            if self.seq > after:
                continue
            async with condition:
                with suppress(TimeoutError):
                    await asyncio.wait_for(condition.wait(), 15.0)
