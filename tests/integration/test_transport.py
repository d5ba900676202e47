"""The broker transport: kombu's Redis transport, reusing one client object per channel."""

from workers.transport import Transport


def test_a_channel_reuses_one_client_for_commands_and_keeps_its_own_for_brpop(redis_env):
    from workers.celery_app import app

    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        channel = connection.default_channel
        first, second = channel._create_client(), channel._create_client()
        assert first is second
        assert channel._create_client(asynchronous=True) is not first
        with connection.Producer() as producer:  # a publish through the shared client really reaches Redis
            producer.publish({"probe": 1}, routing_key="transport-probe", declare=[])
        assert first.llen("transport-probe") == 1
        first.delete("transport-probe")


def test_a_message_published_into_a_pipeline_reaches_its_queue_only_with_the_pipeline(redis_env):
    import json

    import redis

    from shared.settings import get_settings
    from workers.celery_app import EXECUTE_TASK, app, task_message

    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    queue_key = f"{settings.redis_prefix}llm.simple"
    with client.pipeline() as pipe:
        pipe.set(f"{settings.redis_prefix}probe", "1")
        assert task_message(app, EXECUTE_TASK, ["job-1"], "llm.simple", "job-1").into(pipe)
        assert client.llen(queue_key) == 0  # held in the pipeline, not sent
        pipe.execute()
    [raw] = client.lrange(queue_key, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["id"] == "job-1" and message["headers"]["task"] == EXECUTE_TASK
    assert message["properties"]["delivery_info"]["routing_key"] == "llm.simple"
    # outside the block a publish goes out at once, as kombu's own
    app.send_task(EXECUTE_TASK, args=["job-2"], queue="llm.simple", task_id="job-2", ignore_result=True)
    assert client.llen(queue_key) == 2
    client.delete(queue_key, f"{settings.redis_prefix}probe")
