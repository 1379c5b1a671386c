"""Packets as block code sees them, conversions to and from the wire messages, and the one
JSON error shape every data-plane failure is reported in.

Block code receives a `Packet`: it has the fields of `AIOSPacket` (so code written for the
public AIOS SDK, which reads `packet.data`, `packet.session_id`, `packet.files` ..., runs
unchanged) but `data` may also hold a dict, which the AIOS `Muxer` puts there when it merges
inputs, something a protobuf string field cannot hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from block_sdk.protos import aios_packet_pb2 as pb

AIOSPacket = pb.AIOSPacket
FileInfo = pb.FileInfo
BlockInferencePacket = pb.BlockInferencePacket

# gRPC status code names used in error documents and QueueReply.error_code.
OK = "OK"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"
ABORTED = "ABORTED"
UNAUTHENTICATED = "UNAUTHENTICATED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
NOT_FOUND = "NOT_FOUND"
ERROR_CODES = frozenset(
    {
        INVALID_ARGUMENT,
        DEADLINE_EXCEEDED,
        RESOURCE_EXHAUSTED,
        UNAVAILABLE,
        INTERNAL,
        ABORTED,
        UNAUTHENTICATED,
        FAILED_PRECONDITION,
        NOT_FOUND,
    }
)


class DataPlaneError(Exception):
    """A request failed; `code` is a gRPC status code name, `details` extra context.

    `to_json()` is the error document that reaches the caller as the gRPC status detail:
    `{"error": {"code": ..., "message": ..., "details": [...]}}`.
    """

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code if code in ERROR_CODES else INTERNAL
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": [self.details] if self.details else [],
            }
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_json(cls, code: str, text: str) -> DataPlaneError:
        """Rebuild from an error document; tolerates plain text from older peers."""
        try:
            doc = json.loads(text)["error"]
            details = doc.get("details") or [{}]
            return cls(code, str(doc.get("message", "")), **(details[0] or {}))
        except (ValueError, KeyError, TypeError, IndexError):
            return cls(code, text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"


@dataclass(slots=True)
class PacketFile:
    """A file attached to a packet: `metadata` is a JSON string, as on the wire."""

    metadata: str = "{}"
    file_data: bytes = b""

    @property
    def meta(self) -> dict[str, Any]:
        """`metadata` parsed; `{}` when it is empty or not a JSON object."""
        try:
            value = json.loads(self.metadata) if self.metadata else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @classmethod
    def of(cls, metadata: Any, file_data: bytes) -> PacketFile:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata, default=str)
        return cls(metadata=text, file_data=bytes(file_data))


@dataclass(slots=True)
class Packet:
    """One job as seen by block code. Mirrors `AIOSPacket`, plus what the executor learned
    from the `BlockInferencePacket` (`frame_ptr`, `query_parameters`, `block_id`)."""

    session_id: str = ""
    seq_no: int = 0
    data: Any = ""
    ts: float = 0.0
    output_ptr: str = ""
    files: list[Any] = field(default_factory=list)
    frame_ptr: bytes = b""
    query_parameters: str = ""
    block_id: str = ""
    request_id: str = ""

    def json(self) -> Any:
        """`data` parsed from JSON (a dict `data`, as after muxing, is returned as is)."""
        if isinstance(self.data, str | bytes):
            return json.loads(self.data) if self.data else {}
        return self.data

    @classmethod
    def from_proto(cls, msg: pb.AIOSPacket, **extra: Any) -> Packet:
        return cls(
            session_id=msg.session_id,
            seq_no=msg.seq_no,
            data=msg.data,
            ts=msg.ts,
            output_ptr=msg.output_ptr,
            files=[PacketFile(f.metadata, f.file_data) for f in msg.files],
            **extra,
        )

    def to_proto(self) -> pb.AIOSPacket:
        msg = pb.AIOSPacket(
            session_id=self.session_id,
            seq_no=int(self.seq_no),
            data=self.data if isinstance(self.data, str) else encode_json(self.data),
            ts=float(self.ts),
            output_ptr=self.output_ptr,
        )
        add_files(msg.files, self.files)
        return msg

    def SerializeToString(self) -> bytes:
        return self.to_proto().SerializeToString()

    def copy(self) -> Packet:
        return Packet(
            session_id=self.session_id,
            seq_no=self.seq_no,
            data=self.data,
            ts=self.ts,
            output_ptr=self.output_ptr,
            files=list(self.files),
            frame_ptr=self.frame_ptr,
            query_parameters=self.query_parameters,
            block_id=self.block_id,
            request_id=self.request_id,
        )


def add_files(target: Any, files: Any) -> None:
    """Append files to a repeated FileInfo field. Accepts PacketFile, FileInfo messages,
    `(metadata, bytes)` tuples and `{"metadata":..., "file_data":...}` dicts."""
    for item in files or ():
        if isinstance(item, tuple | list):
            meta, data = item
            f = PacketFile.of(meta, data)
            target.add(metadata=f.metadata, file_data=f.file_data)
        elif isinstance(item, dict):
            f = PacketFile.of(item.get("metadata", {}), item.get("file_data", b""))
            target.add(metadata=f.metadata, file_data=f.file_data)
        else:
            meta = item.metadata
            target.add(
                metadata=meta if isinstance(meta, str) else json.dumps(meta, default=str),
                file_data=item.file_data,
            )


def _json_default(value: Any) -> Any:
    # Model outputs are often numpy scalars/arrays; make them JSON without forcing every block
    # author to convert. Imported lazily so block_sdk does not require numpy.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_json(value: Any) -> str:
    """JSON text for packet data; numpy values become lists/numbers."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def block_packet_to_aios(req: pb.BlockInferencePacket) -> pb.AIOSPacket:
    """The executor's conversion of the public request into the packet an instance runs."""
    msg = pb.AIOSPacket(
        session_id=req.session_id,
        seq_no=req.seq_no,
        data=req.data,
        ts=req.ts,
        output_ptr=req.output_ptr,
    )
    if req.files:
        msg.files.extend(req.files)
    return msg


def make_block_packet(
    data: Any = None,
    *,
    block_id: str = "",
    session_id: str = "",
    seq_no: int = 0,
    files: Any = None,
    ts: float = 0.0,
    output_ptr: str = "",
    query_parameters: str = "",
    frame_ptr: bytes = b"",
) -> pb.BlockInferencePacket:
    """Client helper: a BlockInferencePacket with `data` JSON-encoded when it is not text."""
    msg = pb.BlockInferencePacket(
        block_id=block_id,
        session_id=session_id,
        seq_no=seq_no,
        data=data if isinstance(data, str) else encode_json({} if data is None else data),
        ts=ts,
        output_ptr=output_ptr,
        query_parameters=query_parameters,
        frame_ptr=frame_ptr,
    )
    add_files(msg.files, files)
    return msg
