"""Task events as Flower reads them: every job's received, started and succeeded events arrive, in batches."""

from __future__ import annotations

import base64
import json
import threading
import time

import redis

from tests.integration.conftest import poll

JOBS = 12


def _event_messages(client: redis.Redis, stop: threading.Event, into: list[list[dict]]) -> None:
    """Every message on the events exchange, as the list of events it carries (kombu's Redis fanout is pub/sub)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*celeryev*")
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.1)
        if message is None:
            continue
        envelope = json.loads(message["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        into.append(body if isinstance(body, list) else [body])
    pubsub.close()


def test_every_job_s_task_events_reach_the_events_exchange_in_batches(api, start_worker, redis_env):
    start_worker()
    messages: list[list[dict]] = []
    stop = threading.Event()
    listener = threading.Thread(target=_event_messages, args=(redis.Redis.from_url(redis_env), stop, messages))
    listener.start()
    try:
        time.sleep(0.3)  # subscribed before the first job is sent
        ids = [
            api.post("/v1/jobs", json={"request": f"What is the capital of country {i}?"}).json()["id"]
            for i in range(JOBS)
        ]
        assert all(poll(api, job_id)["status"] == "succeeded" for job_id in ids)
        wanted = {(kind, job_id) for job_id in ids for kind in ("task-received", "task-started", "task-succeeded")}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen = {(event["type"], event.get("uuid")) for batch in messages for event in batch}
            if wanted <= seen:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        listener.join()
    task_messages = [batch for batch in messages if batch[0]["type"].startswith("task-")]
    seen = {(event["type"], event.get("uuid")) for batch in task_messages for event in batch}
    assert wanted <= seen, wanted - seen
    events = sum(len(batch) for batch in task_messages)
    # one publish per flush interval, not one per event: 36 events go out in a handful of messages
    assert len(task_messages) * 4 <= events, [len(batch) for batch in task_messages]
