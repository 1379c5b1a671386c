"""The Django-free parts of the node agent: process supervision and hardware metrics."""
