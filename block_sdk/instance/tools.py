"""Fan-in and batching helpers of the AIOS SDK: `Muxer`, `Batcher`, `TimeBasedBatcher`.

All three are bounded: a muxer group that never completes expires after `timeout_s`, and the
number of open groups is capped, so a lost upstream packet cannot grow memory without end.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from block_sdk.packet import Packet

MuxKey = tuple[str, int]


@dataclass(slots=True)
class _Group:
    created: float
    packets: list[Any] = field(default_factory=list)


def _parse(data: Any) -> Any:
    if isinstance(data, str | bytes):
        try:
            return json.loads(data) if data else {}
        except ValueError:
            return data
    return data


class Muxer:
    """Merges `N` packets with the same `(session_id, seq_no)` into one packet whose `data`
    is `{"inputs": [<data of each>]}` and whose files are the concatenation. `N == 1` passes
    packets through untouched."""

    def __init__(self, N: int = 1, timeout_s: float = 30.0, max_groups: int = 10_000) -> None:
        if N < 1:
            raise ValueError("Muxer N must be >= 1")
        self.N = N
        self.timeout_s = timeout_s
        self.max_groups = max_groups
        self._groups: OrderedDict[MuxKey, _Group] = OrderedDict()
        self._expired: list[tuple[MuxKey, list[Any]]] = []
        self._lock = threading.Lock()

    @staticmethod
    def key_of(packet: Any) -> MuxKey:
        return (str(packet.session_id), int(packet.seq_no))

    def process_packet(self, packet: Any) -> Any | None:
        """Add a packet; return the merged packet when its group is complete, else None."""
        if self.N == 1:
            return packet
        key = self.key_of(packet)
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                if len(self._groups) >= self.max_groups:
                    # Evict the oldest open group rather than grow without bound.
                    old_key, old = self._groups.popitem(last=False)
                    self._expired.append((old_key, old.packets))
                group = self._groups[key] = _Group(created=time.monotonic())
            group.packets.append(packet)
            if len(group.packets) < self.N:
                return None
            del self._groups[key]
        return self._merge(group.packets)

    def expire(self, now: float | None = None) -> list[tuple[MuxKey, list[Any]]]:
        """Remove and return groups older than `timeout_s` (and any evicted ones)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            out, self._expired = self._expired, []
            while self._groups:
                key, group = next(iter(self._groups.items()))
                if now - group.created < self.timeout_s:
                    break
                del self._groups[key]
                out.append((key, group.packets))
        return out

    def pending(self) -> int:
        with self._lock:
            return len(self._groups)

    def _merge(self, packets: list[Any]) -> Any:
        base = packets[0]
        merged = base.copy() if isinstance(base, Packet) else copy.deepcopy(base)
        merged.data = {"inputs": [_parse(p.data) for p in packets]}
        files: list[Any] = []
        for p in packets:
            files.extend(p.files)
        merged.files = files
        return merged

    # AIOS name of the merge step, kept for subclasses written against it.
    _merge_packets = _merge


class Batcher:
    """Collects packets and returns a list of `N` once full; you drive it from `on_data`."""

    def __init__(self, N: int) -> None:
        if N < 1:
            raise ValueError("Batcher N must be >= 1")
        self.N = N
        self.batch: list[Any] = []
        self._lock = threading.Lock()

    def add_to_batch(self, packet: Any) -> list[Any] | None:
        with self._lock:
            self.batch.append(packet)
            if len(self.batch) >= self.N:
                out, self.batch = self.batch, []
                return out
        return None

    def flush(self) -> list[Any]:
        with self._lock:
            out, self.batch = self.batch, []
        return out

    def __len__(self) -> int:
        return len(self.batch)


class TimeBasedBatcher(Batcher):
    """Emits a batch at `N` packets or when the oldest waiting packet is `T` seconds old."""

    def __init__(self, N: int, T: float) -> None:
        super().__init__(N)
        self.T = T
        self._first_at: float | None = None

    def add_to_batch(self, packet: Any) -> list[Any] | None:
        with self._lock:
            if not self.batch:
                self._first_at = time.monotonic()
            self.batch.append(packet)
            if len(self.batch) >= self.N or self._due():
                return self._take()
        return None

    def flush_if_due(self) -> list[Any] | None:
        """Call periodically: returns the partial batch once it has waited `T` seconds."""
        with self._lock:
            if self.batch and self._due():
                return self._take()
        return None

    def flush(self) -> list[Any]:
        with self._lock:
            return self._take()

    def _due(self) -> bool:
        return self._first_at is not None and time.monotonic() - self._first_at >= self.T

    def _take(self) -> list[Any]:
        out, self.batch = self.batch, []
        self._first_at = None
        return out
