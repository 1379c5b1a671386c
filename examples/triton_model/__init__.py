"""Triton-backed example: a small linear model served by Triton's python backend."""
