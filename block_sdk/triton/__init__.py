"""Triton-backed blocks: a ready instance class over `tritonclient` (HTTP or gRPC) and a
helper that runs a Triton Inference Server process for a model repository."""
