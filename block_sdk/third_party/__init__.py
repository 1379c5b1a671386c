"""Third-party systems behind a block: externally managed (address in `blockInitData`) or
managed by an init workload (`python -m block_sdk.third_party.init`) that starts the system,
publishes its `finish()` data, keeps it running and tears it down on block removal."""

from block_sdk.third_party.sdk import (
    InitContext,
    InitError,
    InitFailed,
    InitTimeout,
    finish_key,
    read_finish,
    read_status,
    resolve_finish_data,
    status_key,
    wait_for_finish,
)

__all__ = [
    "InitContext",
    "InitError",
    "InitFailed",
    "InitTimeout",
    "finish_key",
    "read_finish",
    "read_status",
    "resolve_finish_data",
    "status_key",
    "wait_for_finish",
]
