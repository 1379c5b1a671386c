"""Compatibility name for the block SDK: blocks written for the public AIOS instance SDK do
`from aios_instance import *` and run unchanged. Everything here comes from `block_sdk.sdk`."""

from block_sdk.sdk import *  # noqa: F403
from block_sdk.sdk import __all__  # noqa: F401
