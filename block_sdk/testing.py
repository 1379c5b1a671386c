"""Test a block class in-process: `BlockTester(MyBlock).run({"x": 1})`.

No Redis, no HTTP, no threads: the same `BlockPipeline` the instance process uses, called
directly, with a `TestContext` whose events and sidecar pushes are recorded in memory
(`context.events.pushed`, `context.side_cars.pushed`). Outputs go through the same JSON
encoding as in production, so a value that would not serialise fails here too.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from block_sdk.instance.api import BlockCodeError
from block_sdk.instance.context import BlockEvents, BlockSideCars, Context
from block_sdk.instance.pipeline import BlockPipeline, output_packet
from block_sdk.packet import INTERNAL, Packet, PacketFile, encode_json
from block_sdk.protos import aios_packet_pb2 as pb

__all__ = ["BlockTestError", "BlockTester", "TestContext"]

# Block code failures surface as this (a DataPlaneError: .code, .message, .details).
BlockTestError = BlockCodeError


class TestContext(Context):
    """A Context with in-memory events and sidecars (set attributes freely before use)."""

    __test__ = False  # not a pytest test class

    def __init__(self, **kw: Any) -> None:
        sidecars = kw.pop("sidecars", None)
        super().__init__(**kw)
        if not isinstance(self.events, BlockEvents) or self.events._client is not None:
            self.events = BlockEvents(self.block_id, self.instance_id)
        if sidecars is not None:
            self.side_cars = BlockSideCars(self.block_id, sidecars)


class BlockTester:
    """Runs a block class in-process.

    `run(data, files)` returns the list of output dicts that `on_data` produced for one input
    packet (the AIOS SDK's shape; `[]` while a muxer or batch is still collecting);
    `run_one(...)` returns the single output dict. Block failures raise `BlockTestError` with
    the gRPC code and message a remote caller would get.
    """

    __test__ = False

    def __init__(
        self,
        block_cls: type,
        init_data: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
        block_data: dict[str, Any] | None = None,
        *,
        context: Context | None = None,
        block_id: str = "test-block",
        instance_id: str = "instance-001",
        sidecars: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if context is None:
            context = TestContext(
                block_id=block_id,
                instance_id=instance_id,
                block_data=dict(block_data or {}),
                block_init_data=dict(init_data or {}),
                block_init_settings=dict(settings or {}),
                block_init_parameters=dict(parameters or {}),
                sidecars=sidecars,
            )
        self.context = context
        self.pipeline = BlockPipeline(block_cls, context)
        self.block = self.pipeline.block
        self._seq = itertools.count(1)

    @classmethod
    def init_with_context(cls, block_cls: type, context: Context) -> BlockTester:
        return cls(block_cls, context=context)

    def packet(
        self,
        data: Any = None,
        files: list[tuple[Any, bytes]] | None = None,
        *,
        session_id: str = "test-session",
        seq_no: int | None = None,
        output_ptr: str = "",
    ) -> Packet:
        return Packet(
            session_id=session_id,
            seq_no=next(self._seq) if seq_no is None else seq_no,
            data=data if isinstance(data, str) else encode_json({} if data is None else data),
            output_ptr=output_ptr,
            files=[PacketFile.of(meta, blob) for meta, blob in (files or [])],
            block_id=self.context.block_id,
        )

    def run_packet(self, packet: Packet) -> pb.AIOSPacket | None:
        """Full path for one packet; the output AIOSPacket as an instance would answer, or
        None when a muxer is still waiting for the rest of its group."""
        muxer = self.pipeline.muxer
        if muxer is not None:
            packet = muxer.process_packet(packet)
            if packet is None:
                return None
        outputs = self.pipeline.process(packet)
        return output_packet(packet, outputs)

    def run(
        self,
        data: Any = None,
        files: list[tuple[Any, bytes]] | None = None,
        **packet_fields: Any,
    ) -> list[Any]:
        muxer = self.pipeline.muxer
        packet = self.packet(data, files, **packet_fields)
        if muxer is not None:
            packet = muxer.process_packet(packet)
            if packet is None:
                return []
        outputs = self.pipeline.process(packet)
        try:
            # Round-trip through JSON: what a remote caller would receive.
            return [json.loads(encode_json(r.output)) for r in outputs.results]
        except (TypeError, ValueError) as exc:
            raise BlockTestError(
                INTERNAL, f"on_data output is not JSON-serialisable: {exc}", stage="on_data"
            ) from exc

    def run_one(
        self, data: Any = None, files: list[tuple[Any, bytes]] | None = None, **kw: Any
    ) -> Any:
        outputs = self.run(data, files, **kw)
        if len(outputs) != 1:
            raise BlockTestError(
                INTERNAL, f"expected exactly one output, got {len(outputs)}", stage="on_data"
            )
        return outputs[0]

    def update(self, parameters: dict[str, Any]) -> tuple[bool, Any]:
        return self.pipeline.update(parameters)

    def health(self) -> Any:
        return self.pipeline.health()

    def management(self, action: str, data: Any = None) -> Any:
        return self.pipeline.management(action, data or {})
