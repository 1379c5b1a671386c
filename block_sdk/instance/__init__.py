"""The instance SDK: what a block author writes against, and the process that runs it."""

from block_sdk.instance.api import BlockCodeError, OnDataResult, PreProcessResult
from block_sdk.instance.config import InstanceConfig
from block_sdk.instance.context import BlockEvents, BlockSideCars, Context, SessionsManager
from block_sdk.instance.pipeline import BlockPipeline, load_class
from block_sdk.instance.runtime import Block
from block_sdk.instance.tools import Batcher, Muxer, TimeBasedBatcher

__all__ = [
    "Batcher",
    "Block",
    "BlockCodeError",
    "BlockEvents",
    "BlockPipeline",
    "BlockSideCars",
    "Context",
    "InstanceConfig",
    "Muxer",
    "OnDataResult",
    "PreProcessResult",
    "SessionsManager",
    "TimeBasedBatcher",
    "load_class",
]
