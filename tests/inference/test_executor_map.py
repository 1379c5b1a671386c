"""The adhoc servers' block -> executor map follows block status changes at once."""

import json
import uuid

import pytest
import redis
from django.conf import settings

from apps.blocks.services import set_status
from apps.inference import conf
from tests.vdags.support import make_block


@pytest.mark.django_db
def test_a_block_becoming_running_or_failed_updates_the_executor_map():
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    block_id = f"map-{uuid.uuid4().hex[:8]}"
    block = make_block(block_id, status="starting", grpc="127.0.0.1:6553")
    client.hdel(conf.EXECUTOR_MAP_KEY, block_id)
    try:
        set_status(block, "running")
        entry = client.hget(conf.EXECUTOR_MAP_KEY, block_id)
        assert entry is not None and json.loads(entry)["grpc"] == "127.0.0.1:6553"
        set_status(block, "failed", "node lost")
        assert client.hget(conf.EXECUTOR_MAP_KEY, block_id) is None
    finally:
        client.hdel(conf.EXECUTOR_MAP_KEY, block_id)
