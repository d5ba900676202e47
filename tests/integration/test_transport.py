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
