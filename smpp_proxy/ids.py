"""Proxy-assigned message ids: unique across upstreams, restarts and proxies.

64-bit snowflake: 41 bits of milliseconds since 2024-01-01, 10 bits of node id (one per proxy
sharing a store), 12 bits of sequence within the millisecond (4096 ids/ms/node). Rendered as 16
lowercase hex digits, or decimal for ESMEs that keep ids as integers. Monotonic even if the wall
clock steps back: the generator never reuses a timestamp it has already passed.
"""

from __future__ import annotations

import time

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


class MessageIdGenerator:
    def __init__(self, node_id: int = 0, fmt: str = "hex"):
        if not 0 <= node_id < 1024:
            raise ValueError("node_id must be in 0..1023")
        if fmt not in ("hex", "decimal"):
            raise ValueError("fmt must be 'hex' or 'decimal'")
        self.node_id = node_id
        self.fmt = fmt
        self._last_ms = 0
        self._seq = 0

    def next_int(self) -> int:
        now = int(time.time() * 1000) - EPOCH_MS
        if now <= self._last_ms:
            now = self._last_ms
            self._seq += 1
            if self._seq >= 4096:  # exhausted this millisecond: borrow the next one
                now += 1
                self._seq = 0
        else:
            self._seq = 0
        self._last_ms = now
        return (now << 22) | (self.node_id << 12) | self._seq

    def next(self) -> str:
        n = self.next_int()
        return format(n, "016x") if self.fmt == "hex" else str(n)
