"""The vDAG controller: a gRPC `vDAGInferenceService` in front of a compiled vDAG, with the
quota, quality and health policies and a REST management API.
`python -m block_sdk.vdag_controller --help`."""
