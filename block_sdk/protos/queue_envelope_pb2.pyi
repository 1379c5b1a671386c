from block_sdk.protos import aios_packet_pb2 as _aios_packet_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueueEnvelope(_message.Message):
    __slots__ = ("request_id", "packet", "reply_to", "deadline", "attempt", "block_id", "enqueued_at", "frame_ptr", "query_parameters", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PACKET_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_ID_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    FRAME_PTR_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    packet: _aios_packet_pb2.AIOSPacket
    reply_to: str
    deadline: float
    attempt: int
    block_id: str
    enqueued_at: float
    frame_ptr: bytes
    query_parameters: str
    instance_id: str
    def __init__(self, request_id: _Optional[str] = ..., packet: _Optional[_Union[_aios_packet_pb2.AIOSPacket, _Mapping]] = ..., reply_to: _Optional[str] = ..., deadline: _Optional[float] = ..., attempt: _Optional[int] = ..., block_id: _Optional[str] = ..., enqueued_at: _Optional[float] = ..., frame_ptr: _Optional[bytes] = ..., query_parameters: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class QueueReply(_message.Message):
    __slots__ = ("request_id", "ok", "packet", "error_code", "error_message", "instance_id", "processing_s", "taken_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    PACKET_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_S_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ok: bool
    packet: _aios_packet_pb2.AIOSPacket
    error_code: str
    error_message: str
    instance_id: str
    processing_s: float
    taken_at: float
    def __init__(self, request_id: _Optional[str] = ..., ok: _Optional[bool] = ..., packet: _Optional[_Union[_aios_packet_pb2.AIOSPacket, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., instance_id: _Optional[str] = ..., processing_s: _Optional[float] = ..., taken_at: _Optional[float] = ...) -> None: ...
