"""Fan-in across instances: the inputs of one (request, node) meet in a Redis hash.

Each input of a multi-input node, wherever it was produced and whichever instance of the
node receives it, records itself in `aios:vdag:fanin:{<rid>}:<node>` (field = the sending
node's label, value = the serialized `AIOSPacket`, empty for a skip marker) with one atomic
script. The arrival that completes the set claims the group (a `\\0done` field naming it)
and proceeds with every input; the others are done. The claim makes a retry safe: if the
claiming instance dies before it finishes, its re-queued packet claims the same group again
and gets the same inputs; a late duplicate of another input is ignored. The hash lives as
long as the request may (`ttl_ms`), so an incomplete group (a branch failed, the caller gave
up) disappears on its own.
"""

from __future__ import annotations

from typing import Any

FANIN_PREFIX = "aios:vdag:fanin"
DONE_FIELD = b"\x00done"

_ARRIVE_LUA = """
local done = redis.call('HGET', KEYS[1], ARGV[5])
if done then
  if done == ARGV[1] then return redis.call('HGETALL', KEYS[1]) end
  return false
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[5], ARGV[1])
  return redis.call('HGETALL', KEYS[1])
end
return false
"""


def fanin_key(rid: str, node: str) -> str:
    # The hash tag keeps one request's groups in one Redis Cluster slot.
    return f"{FANIN_PREFIX}:{{{rid}}}:{node}"


class FanIn:
    """The arrival step, on a synchronous Redis client (instances run it in worker threads)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._script = redis.register_script(_ARRIVE_LUA)

    def arrive(
        self, rid: str, node: str, sender: str, payload: bytes, expected: int, ttl_ms: int
    ) -> dict[str, bytes] | None:
        """Record one input; the full `{sender: payload}` when this arrival completes (or
        already claimed) the group, else None."""
        res = self._script(
            keys=[fanin_key(rid, node)],
            args=[sender, payload, expected, max(1, int(ttl_ms)), DONE_FIELD],
        )
        if not res:
            return None
        it = iter(res)
        out: dict[str, bytes] = {}
        for field, value in zip(it, it, strict=True):
            if field != DONE_FIELD:
                out[field.decode()] = value
        return out
