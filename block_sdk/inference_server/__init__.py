"""The adhoc inference server: gRPC `BlockInferenceService` by block id, by search, or along a
dynamic graph, with a quota policy and batched request logging to PostgreSQL.
`python -m block_sdk.inference_server --help`."""
