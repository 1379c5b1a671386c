"""The public block SDK surface, in one import: `from block_sdk.sdk import *`.

This is also what the `aios_instance` compatibility package re-exports, so a block written
for the public AIOS SDK (`from aios_instance import *`) finds the names it expects.
"""

from block_sdk.instance.api import BlockCodeError, OnDataResult, PreProcessResult
from block_sdk.instance.config import InstanceConfig
from block_sdk.instance.context import BlockEvents, BlockSideCars, Context, SessionsManager
from block_sdk.instance.runtime import Block
from block_sdk.instance.tools import Batcher, Muxer, TimeBasedBatcher
from block_sdk.metrics import AIOSMetrics
from block_sdk.packet import (
    AIOSPacket,
    BlockInferencePacket,
    DataPlaneError,
    FileInfo,
    Packet,
    PacketFile,
    make_block_packet,
)
from block_sdk.testing import BlockTester, BlockTestError, TestContext

__all__ = [
    "AIOSMetrics",
    "AIOSPacket",
    "Batcher",
    "Block",
    "BlockCodeError",
    "BlockEvents",
    "BlockInferencePacket",
    "BlockSideCars",
    "BlockTestError",
    "BlockTester",
    "Context",
    "DataPlaneError",
    "FileInfo",
    "InstanceConfig",
    "Muxer",
    "OnDataResult",
    "Packet",
    "PacketFile",
    "PreProcessResult",
    "SessionsManager",
    "TestContext",
    "TimeBasedBatcher",
    "make_block_packet",
]
