"""The agent's bounded sample buffer and its retry back-off.

While the control plane is unreachable the agent keeps sampling; the buffer holds at most
``capacity`` samples and drops the oldest first, so memory stays flat however long the outage.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any


class SampleBuffer:
    """A thread-safe FIFO of samples with a hard bound (oldest dropped when full)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self.dropped = 0  # samples lost to the bound, over the agent's lifetime

    def append(self, sample: dict[str, Any]) -> int:
        """Add a sample; returns how many old samples were dropped to make room."""
        with self._lock:
            lost = 0
            while len(self._items) >= self.capacity:
                self._items.popleft()
                lost += 1
            self._items.append(sample)
            self.dropped += lost
            return lost

    def oldest(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` samples, oldest first, without removing them."""
        with self._lock:
            return [self._items[i] for i in range(min(count, len(self._items)))]

    def discard_oldest(self, count: int) -> None:
        """Remove samples that were delivered (or refused for good)."""
        with self._lock:
            for _ in range(min(count, len(self._items))):
                self._items.popleft()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Backoff:
    """Exponential back-off with jitter, capped: ``initial * 2**n`` up to ``maximum``."""

    def __init__(self, initial_s: float = 1.0, maximum_s: float = 60.0) -> None:
        self.initial_s = max(0.01, initial_s)
        self.maximum_s = max(self.initial_s, maximum_s)
        self.failures = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        self.failures += 1
        ceiling = min(self.maximum_s, self.initial_s * 2 ** min(self.failures - 1, 30))
        # Jitter in [ceiling/2, ceiling]: agents of a whole cluster do not retry in lockstep.
        return ceiling * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.failures = 0
