"""`MemoCache`: tool results by cache key, in an in-memory LRU with an optional sqlite file behind it.

Why: the same SymPy/Z3 question comes back again and again (every sample of a problem, every
epoch, every replica), and a pathological input should cost one timeout, not one per asker. The
memory layer is a plain LRU; the disk layer makes results survive restarts and lets several
processes share them. sqlite in WAL mode gives that without a server: each `put` is its own
transaction (an entry is written whole or not at all), readers never block the writer, and a
busy timeout lets concurrent processes take turns. Disk trouble (a locked or broken file) is
swallowed: the cache is an optimisation, never a reason for a tool call to fail.

Values are `ToolResult`s stored as JSON; `get` returns a fresh object each time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import OrderedDict

from squigglray.verify.result import ToolResult

__all__ = ["MemoCache"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


class MemoCache:
    """`get(key) -> ToolResult | None`, `put(key, result)`; counters `hits`, `misses`
    (`disk_hits` of the hits came from the file); `len()` counts the in-memory entries.
    Thread-safe; with `path`, several processes may share the file."""

    def __init__(self, max_items: int = 100_000, path: str | None = None):
        self.max_items = int(max_items)
        self.path = os.fspath(path) if path is not None else None
        self.hits = self.misses = self.disk_hits = 0
        self._mem: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        if self.path:
            with self._lock:
                self._db()  # fail early on an unusable path

    def get(self, key: str) -> ToolResult | None:
        with self._lock:
            text = self._mem.get(key)
            if text is not None:
                self._mem.move_to_end(key)
            elif self.path:
                text = self._disk_get(key)
                if text is not None:
                    self.disk_hits += 1
                    self._remember(key, text)
            if text is None:
                self.misses += 1
                return None
            self.hits += 1
        return ToolResult.from_dict(json.loads(text))

    def put(self, key: str, result: ToolResult) -> None:
        text = json.dumps(result.to_dict())
        with self._lock:
            self._remember(key, text)
            if self.path:
                self._disk_put(key, text)

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._mem or bool(self.path and self._disk_get(key) is not None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- internals (caller holds the lock) ---------------------------------------------------
    def _remember(self, key: str, text: str) -> None:
        self._mem[key] = text
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_items:
            self._mem.popitem(last=False)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._conn_pid != os.getpid():  # a forked child opens its own
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._conn, self._conn_pid = conn, os.getpid()
        return self._conn

    def _disk_get(self, key: str) -> str | None:
        try:
            row = self._db().execute("SELECT value FROM memo WHERE key = ?", (key,)).fetchone()
        except (sqlite3.Error, OSError):
            return None
        return row[0] if row else None

    def _disk_put(self, key: str, text: str) -> None:
        try:
            self._db().execute("INSERT OR REPLACE INTO memo (key, value) VALUES (?, ?)", (key, text))
        except (sqlite3.Error, OSError):
            pass
