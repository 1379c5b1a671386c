"""The block-author contract: result types and the normalisation of both return styles.

Block classes may answer in the plain style (`[PreProcessResult, ...]`, `OnDataResult`) or in
the AIOS SDK style (`(True, [PreProcessResult, ...])`, `(False, "reason")`,
`(True, OnDataResult(output=...))`, `(True, None)` while a batch fills). Both are accepted so
AIOS blocks run unchanged; everything else is a clear error naming the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from block_sdk.packet import ABORTED, INTERNAL, DataPlaneError, Packet


@dataclass(slots=True)
class PreProcessResult:
    """One entry produced by `on_preprocess`; `on_data` is called once per entry."""

    packet: Any
    extra_data: dict[str, Any] | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        if self.extra_data is None:
            self.extra_data = {}
        if self.session_id is None:
            self.session_id = getattr(self.packet, "session_id", "") or ""


@dataclass(slots=True)
class OnDataResult:
    """What `on_data` produced. `output` is JSON-encoded into `AIOSPacket.data`.

    `files=None` passes the input packet's files through (the AIOS behaviour, where the
    packet object travels on); a list (possibly empty) replaces them.
    """

    output: Any = None
    files: list[Any] | None = field(default=None)


@runtime_checkable
class BlockClass(Protocol):
    """Shape of a block class; only `on_data` is strictly required at run time."""

    def on_data(self, entry: PreProcessResult) -> Any: ...


class BlockCodeError(DataPlaneError):
    """The block's own code failed or refused: raised, returned `(False, reason)`, or
    returned something the runtime cannot interpret."""

    def __init__(self, code: str, message: str, stage: str, **details: Any) -> None:
        super().__init__(code, message, stage=stage, **details)
        self.stage = stage


def _is_status_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool)


def normalize_preprocess(result: Any, packet: Packet) -> list[PreProcessResult]:
    """Turn whatever `on_preprocess` returned into a list of entries, or raise."""
    if _is_status_tuple(result):
        ok, payload = result
        if not ok:
            raise BlockCodeError(ABORTED, str(payload), stage="on_preprocess")
        result = payload
    if result is None:
        raise BlockCodeError(INTERNAL, "on_preprocess returned None", stage="on_preprocess")
    if isinstance(result, PreProcessResult):
        return [result]
    if isinstance(result, list | tuple):
        entries = []
        for item in result:
            if isinstance(item, PreProcessResult):
                entries.append(item)
            elif isinstance(item, Packet):
                entries.append(PreProcessResult(packet=item))
            else:
                raise BlockCodeError(
                    INTERNAL,
                    f"on_preprocess returned a {type(item).__name__} entry; "
                    "expected PreProcessResult",
                    stage="on_preprocess",
                )
        return entries
    raise BlockCodeError(
        INTERNAL,
        f"on_preprocess returned {type(result).__name__}; expected a list of PreProcessResult "
        "or (True, [...]) / (False, reason)",
        stage="on_preprocess",
    )


def normalize_on_data(result: Any) -> OnDataResult | None:
    """Turn whatever `on_data` returned into an OnDataResult, None (no output yet), or raise."""
    if _is_status_tuple(result):
        ok, payload = result
        if not ok:
            raise BlockCodeError(ABORTED, str(payload), stage="on_data")
        result = payload
    if result is None or isinstance(result, OnDataResult):
        return result
    if isinstance(result, dict | list):
        # Convenience: a bare JSON-able value is the output.
        return OnDataResult(output=result)
    raise BlockCodeError(
        INTERNAL,
        f"on_data returned {type(result).__name__}; expected OnDataResult, (True, "
        "OnDataResult) or (False, reason)",
        stage="on_data",
    )


def normalize_update(result: Any) -> tuple[bool, Any]:
    """`on_update` may return (ok, value), a dict, or nothing; report (ok, value)."""
    if _is_status_tuple(result):
        return bool(result[0]), result[1]
    return True, result
