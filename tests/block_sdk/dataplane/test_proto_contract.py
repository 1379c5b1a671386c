"""The AIOS wire contract: every message field number, type and label, and the gRPC paths.

AIOS clients and blocks interoperate only if these never move, so they are pinned through the
compiled descriptors, not through the .proto text."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from block_sdk.protos import (
    aios_packet_pb2,
    aios_packet_pb2_grpc,
    inference_proxy_pb2,
    inference_proxy_pb2_grpc,
    vdag_packet_pb2,
    vdag_packet_pb2_grpc,
)

S, B, U64, D, BOOL, MSG = (
    F.TYPE_STRING,
    F.TYPE_BYTES,
    F.TYPE_UINT64,
    F.TYPE_DOUBLE,
    F.TYPE_BOOL,
    F.TYPE_MESSAGE,
)

CONTRACT = {
    (aios_packet_pb2, "FileInfo"): {"metadata": (1, S), "file_data": (2, B)},
    (aios_packet_pb2, "AIOSPacket"): {
        "session_id": (1, S),
        "seq_no": (2, U64),
        "data": (4, S),
        "ts": (5, D),
        "output_ptr": (6, S),
        "files": (7, MSG),
    },
    (aios_packet_pb2, "BlockInferencePacket"): {
        "block_id": (1, S),
        "session_id": (3, S),
        "seq_no": (4, U64),
        "frame_ptr": (5, B),
        "data": (6, S),
        "query_parameters": (7, S),
        "ts": (8, D),
        "files": (9, MSG),
        "output_ptr": (10, S),
    },
    (vdag_packet_pb2, "vDAGFileInfo"): {"metadata": (1, S), "file_data": (2, B)},
    (vdag_packet_pb2, "vDAGInferencePacket"): {
        "session_id": (3, S),
        "seq_no": (4, U64),
        "frame_ptr": (5, B),
        "data": (6, S),
        "ts": (8, D),
        "files": (9, MSG),
    },
    (inference_proxy_pb2, "InferenceMessage"): {"rpc_data": (1, B)},
    (inference_proxy_pb2, "InferenceRespose"): {"message": (1, BOOL)},
}

REPEATED = {
    ("AIOSPacket", "files"): "FileInfo",
    ("BlockInferencePacket", "files"): "FileInfo",
    ("vDAGInferencePacket", "files"): "vDAGFileInfo",
}


@pytest.mark.parametrize(
    ("module", "name"), list(CONTRACT), ids=lambda v: getattr(v, "__name__", v)
)
def test_message_fields_are_exactly_the_aios_ones(module, name):
    desc = module.DESCRIPTOR.message_types_by_name[name]
    assert desc.full_name == name, "public messages live in no package"
    got = {f.name: (f.number, f.type) for f in desc.fields}
    assert got == CONTRACT[(module, name)]
    for f in desc.fields:
        if (name, f.name) in REPEATED:
            assert f.label == F.LABEL_REPEATED
            assert f.message_type.full_name == REPEATED[(name, f.name)]
        else:
            assert f.label != F.LABEL_REPEATED


def test_public_protos_declare_no_package():
    for module in (aios_packet_pb2, vdag_packet_pb2, inference_proxy_pb2):
        assert module.DESCRIPTOR.package == ""


@pytest.mark.parametrize(
    ("module", "service", "request_type", "response_type", "path"),
    [
        (
            aios_packet_pb2,
            "BlockInferenceService",
            "BlockInferencePacket",
            "AIOSPacket",
            "/BlockInferenceService/infer",
        ),
        (
            vdag_packet_pb2,
            "vDAGInferenceService",
            "vDAGInferencePacket",
            "vDAGInferencePacket",
            "/vDAGInferenceService/infer",
        ),
        (
            inference_proxy_pb2,
            "InferenceProxy",
            "InferenceMessage",
            "InferenceRespose",
            "/InferenceProxy/infer",
        ),
    ],
)
def test_service_method_paths(module, service, request_type, response_type, path):
    svc = module.DESCRIPTOR.services_by_name[service]
    assert [m.name for m in svc.methods] == ["infer"]
    method = svc.methods[0]
    assert method.input_type.full_name == request_type
    assert method.output_type.full_name == response_type
    assert f"/{svc.full_name}/{method.name}" == path


def test_generated_stubs_use_the_same_paths():
    import grpc

    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        stubs = [
            aios_packet_pb2_grpc.BlockInferenceServiceStub(channel),
            vdag_packet_pb2_grpc.vDAGInferenceServiceStub(channel),
            inference_proxy_pb2_grpc.InferenceProxyStub(channel),
        ]
        paths = [stub.infer._method for stub in stubs]
    finally:
        channel.close()
    assert paths == [
        b"/BlockInferenceService/infer",
        b"/vDAGInferenceService/infer",
        b"/InferenceProxy/infer",
    ]


def test_inference_message_carries_a_serialized_aios_packet():
    packet = aios_packet_pb2.AIOSPacket(session_id="s", seq_no=7, data='{"a":1}', output_ptr="{}")
    packet.files.add(metadata='{"name":"x"}', file_data=b"\x00\x01")
    msg = inference_proxy_pb2.InferenceMessage(rpc_data=packet.SerializeToString())
    wire = msg.SerializeToString()
    again = aios_packet_pb2.AIOSPacket.FromString(
        inference_proxy_pb2.InferenceMessage.FromString(wire).rpc_data
    )
    assert again == packet
