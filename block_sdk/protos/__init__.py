"""Protobuf and gRPC modules for the AIOS data plane.

Generated modules (`*_pb2.py`, `*_pb2_grpc.py`) are checked in; rebuild them with
`block_sdk/protos/generate.sh`. The public protos declare no package, so their gRPC paths are
`/BlockInferenceService/infer`, `/vDAGInferenceService/infer` and `/InferenceProxy/infer`.
"""
