"""Runs one block class: on_preprocess -> on_data per entry, on_update, health, management.

Synchronous on purpose: block code is ordinary blocking Python (model calls, numpy). The
instance runtime calls it from worker threads; `BlockTester` calls it directly. Every failure
of block code leaves here as a `BlockCodeError` carrying the gRPC code the caller will see.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from block_sdk.instance.api import (
    BlockCodeError,
    OnDataResult,
    PreProcessResult,
    normalize_on_data,
    normalize_preprocess,
    normalize_update,
)
from block_sdk.instance.context import Context
from block_sdk.instance.tools import Muxer
from block_sdk.packet import INTERNAL, NOT_FOUND, Packet, add_files, encode_json
from block_sdk.protos import aios_packet_pb2 as pb

log = logging.getLogger("block_sdk.instance")


def load_class(entrypoint: str) -> type:
    """Import `module.path:ClassName` (also accepts `module.path.ClassName`)."""
    if ":" in entrypoint:
        module_name, _, attr = entrypoint.partition(":")
    else:
        module_name, _, attr = entrypoint.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"entrypoint {entrypoint!r} must look like 'module.path:ClassName'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"entrypoint {entrypoint!r} is not a class")
    return obj


def _raised(stage: str, exc: Exception) -> BlockCodeError:
    return BlockCodeError(
        INTERNAL,
        f"{stage} raised {type(exc).__name__}: {exc}",
        stage=stage,
        exception=type(exc).__name__,
    )


@dataclass(slots=True)
class BlockOutputs:
    """What one packet produced: zero, one or several `OnDataResult`s."""

    results: list[OnDataResult]

    def outputs(self) -> list[Any]:
        return [r.output for r in self.results]


class BlockPipeline:
    """Owns one instance of the block class and calls its methods with uniform errors."""

    def __init__(self, block_cls: type, context: Context) -> None:
        if not callable(getattr(block_cls, "on_data", None)):
            raise TypeError(f"{block_cls.__name__} has no on_data(self, entry) method")
        self.block_cls = block_cls
        self.context = context
        self.block = block_cls(context)
        self.muxer: Muxer | None = self._muxer()

    def _muxer(self) -> Muxer | None:
        get = getattr(self.block, "get_muxer", None)
        if not callable(get):
            return None
        muxer = get()
        if muxer is None:
            return None
        if not callable(getattr(muxer, "process_packet", None)):
            raise TypeError("get_muxer() must return a Muxer (with process_packet) or None")
        # N == 1 is pass-through: skip the bookkeeping entirely.
        if getattr(muxer, "N", 2) == 1:
            return None
        return muxer

    # -- data path -----------------------------------------------------------------------
    def process(self, packet: Packet) -> BlockOutputs:
        pre: Callable[[Any], Any] | None = getattr(self.block, "on_preprocess", None)
        if pre is None:
            entries = [PreProcessResult(packet=packet)]
        else:
            try:
                raw = pre(packet)
            except BlockCodeError:
                raise
            except Exception as exc:
                raise _raised("on_preprocess", exc) from exc
            entries = normalize_preprocess(raw, packet)
        results: list[OnDataResult] = []
        on_data = self.block.on_data
        for entry in entries:
            try:
                raw = on_data(entry)
            except BlockCodeError:
                raise
            except Exception as exc:
                raise _raised("on_data", exc) from exc
            res = normalize_on_data(raw)
            if res is not None:
                results.append(res)
        return BlockOutputs(results)

    # -- control path --------------------------------------------------------------------
    def update(self, params: dict[str, Any]) -> tuple[bool, Any]:
        """Merge into context parameters, then let the block react via on_update."""
        self.context.update_parameters(params)
        fn = getattr(self.block, "on_update", None)
        if fn is None:
            return True, params
        try:
            return normalize_update(fn(params))
        except Exception as exc:
            log.exception("on_update raised")
            return False, f"on_update raised {type(exc).__name__}: {exc}"

    def health(self) -> Any:
        fn = getattr(self.block, "health", None)
        return {"status": "healthy"} if fn is None else fn()

    def management(self, action: str, data: Any) -> Any:
        fn = getattr(self.block, "management", None)
        if fn is None:
            raise BlockCodeError(NOT_FOUND, "block has no management()", stage="management")
        try:
            return fn(action, data)
        except Exception as exc:
            raise _raised("management", exc) from exc


def output_packet(packet: Packet, outputs: BlockOutputs) -> pb.AIOSPacket:
    """The AIOSPacket an instance answers with: `data` is the JSON of the single output (a
    JSON list when on_preprocess fanned out to several, `null` when none was produced yet,
    e.g. a batch still filling). Files pass through unless a result sets its own."""
    results = outputs.results
    if len(results) == 1:
        data = encode_json(results[0].output)
    elif not results:
        data = "null"
    else:
        data = encode_json([r.output for r in results])
    msg = pb.AIOSPacket(
        session_id=packet.session_id,
        seq_no=int(packet.seq_no),
        data=data,
        ts=float(packet.ts),
        output_ptr=packet.output_ptr,
    )
    explicit = [r.files for r in results if r.files is not None]
    if explicit:
        for files in explicit:
            add_files(msg.files, files)
    elif results:
        add_files(msg.files, packet.files)
    return msg
