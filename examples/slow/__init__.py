"""Slow example: sleeps a configurable time per request, for autoscaling demos."""
