"""AIOS data plane and block SDK: importable and testable without Django."""
