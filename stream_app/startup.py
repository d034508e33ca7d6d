"""Before a worker or the trainer starts Faust: wait for the broker, answering probes.

Faust exits when it cannot bootstrap from Kafka; under Kubernetes or compose that is a
crash loop. Instead the process waits here, serving ``/healthz`` (200: alive) and
``/readyz`` (503 with the reason) on its web port, and starts Faust once a broker
answers.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiokafka import AIOKafkaClient

from stream_app.config import Settings
from stream_app.connections import KafkaConfig
from stream_app.faults import Backoff, Every, infrastructure_cause
from stream_app.logs import log


async def broker_error(kafka: KafkaConfig) -> str | None:
    """None when a broker answers a metadata request, else why not."""
    client = AIOKafkaClient(**kafka.client_args(), request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return None
    except Exception as exc:  # noqa: BLE001 - classified below
        if infrastructure_cause(exc) is None:
            raise
        return repr(exc)
    finally:
        await client.close()


async def _wait(s: Settings) -> None:
    reason = await broker_error(s.kafka())
    if reason is None:
        return
    state = {"reason": reason}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "not_ready",
                                  "reasons": [f"waiting for kafka ({state['reason']})"]},
                                 status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, s.web_host, s.web_port).start()
    backoff = Backoff(s.retry_base_s, s.retry_max_s)
    said = Every(60.0)
    attempt = 0
    try:
        while reason is not None:
            attempt += 1
            state["reason"] = reason
            if said.due():  # once, then once a minute
                log("startup_waiting", level=logging.WARNING, cause="kafka", attempt=attempt,
                    bootstrap=s.kafka_bootstrap_servers, error=reason,
                    settings="KAFKA_BOOTSTRAP_SERVERS, STREAM_APP_KAFKA_*")
            await asyncio.sleep(backoff.delay(attempt))
            reason = await broker_error(s.kafka())
    finally:
        await runner.cleanup()  # the port is Faust's from here
    log("broker_reachable", bootstrap=s.kafka_bootstrap_servers, attempts=attempt)


def wait_for_broker(s: Settings) -> None:
    """Blocks until a broker answers (before Faust's own event loop starts)."""
    asyncio.run(_wait(s))
