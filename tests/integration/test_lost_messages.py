"""A worker killed between popping a message and recording it as unacknowledged loses it; the sweep sends it again.

The crash is reproduced on the real broker: the message is popped from its queue list as the dead worker's BRPOP
did, and nothing else records it.
"""

from __future__ import annotations

import time

import redis

from tests.integration.conftest import poll
from tests.wire.servers import Reply

QUESTION = "Define word number {}"  # simple tier: gemini-2.0-flash


def submit(api, i: int) -> dict:
    return api.post("/v1/jobs", json={"request": QUESTION.format(i)}).json()


def test_a_job_whose_message_a_crashed_worker_lost_runs_once_when_newer_ones_have_run(
    api, start_worker, wire_servers, redis_env, monkeypatch
):
    monkeypatch.setenv("ORCH_LOST_MESSAGE_SWEEP_SECONDS", "1")
    client = redis.Redis.from_url(redis_env, decode_responses=True)
    lost = submit(api, 1)
    popped = client.rpop(f"orch:{lost['queue']}")  # the dead worker's BRPOP
    assert lost["id"] in popped and client.llen(f"orch:{lost['queue']}") == 0
    time.sleep(1.2)  # messages sent from now on are newer than the lost one by more than the sweep's grace

    worker = start_worker(concurrency=4)
    later = submit(api, 2)
    assert later["queue"] == lost["queue"]
    assert poll(api, later["id"])["status"] == "succeeded"
    record = poll(api, lost["id"], timeout=20)
    assert record["status"] == "succeeded"
    assert record["deliveries"] == 1
    assert len(wire_servers["google"].requests) == 2  # each job called the provider once
    assert worker.log.read_text().count("sending it again") == 1


def test_a_message_still_queued_or_held_by_a_worker_is_not_sent_again(
    api, start_worker, wire_servers, redis_env, monkeypatch
):
    monkeypatch.setenv("ORCH_LOST_MESSAGE_SWEEP_SECONDS", "1")
    wire_servers["google"].set_model("gemini-2.0-flash", Reply(delay_s=2.5))
    client = redis.Redis.from_url(redis_env, decode_responses=True)
    older = submit(api, 1)
    time.sleep(1.2)
    newer = submit(api, 2)
    queue = f"orch:{older['queue']}"
    # as if the older message had been restored behind the newer one: the newer is claimed first
    client.lpush(queue, client.rpop(queue))

    worker = start_worker(concurrency=1)  # the older message waits in the queue, or reserved, while the newer runs
    assert poll(api, newer["id"])["status"] == "succeeded"
    record = poll(api, older["id"], timeout=20)
    assert record["status"] == "succeeded" and record["deliveries"] == 1
    assert len(wire_servers["google"].requests) == 2
    assert "sending it again" not in worker.log.read_text()  # a sweep ran meanwhile and found the message
