"""HTTP on the worker: health, readiness, stats, a user's interests and recommendations,
metrics."""

from __future__ import annotations

import hmac
import time

import faust
from faust.web import Request, Response, View

from stream_app.metrics import Metrics
from stream_app.runtime import ProcessRuntime, Runtime


def register_metrics(app: faust.App, metrics: Metrics) -> None:
    @app.page("/metrics")
    async def exposition(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")


def register_health(app: faust.App, runtime: ProcessRuntime) -> None:
    """``/healthz``: the process is alive (restart it only when this fails).
    ``/readyz``: it should get traffic: started (Redis reachable, catalog and model
    loaded), joined its consumer group, Redis answering now, no batch stuck retrying,
    consumer lag not standing still. 503 with the reasons otherwise."""

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "alive", "uptime_s": round(time.time() - runtime.started_at, 1)})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        reasons = runtime.health.problems()
        if runtime.ready_now():
            if app.rebalancing_count == 0:
                reasons.append("not yet joined the consumer group")
            elif app.rebalancing:
                reasons.append("consumer group rebalancing")
            redis_error = await runtime.redis_error()
            if redis_error:
                reasons.append(f"Redis not answering: {redis_error}")
        body = {"status": "ready" if not reasons else "not_ready", "reasons": reasons,
                "retrying": runtime.health.retrying_now(), "lag": runtime.health.lag_total,
                **(runtime.describe() if runtime.ready_now() else {})}
        return web.json(body, status=200 if not reasons else 503)

    @app.timer(runtime.settings.lag_interval_s)
    async def measure_lag() -> None:
        """Records behind the end of every assigned partition, as metrics and for
        ``/readyz``."""
        lag = {}
        runtime.metrics.consumer_lag.clear()  # partitions moved away leave no stale series
        assigned = app.consumer.assignment()
        runtime.assigned = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        for tp in assigned:
            end = app.consumer.highwater(tp)
            done = runtime.processed.get((tp.topic, tp.partition))
            if end is None:
                continue
            if done is None:
                done = await app.consumer.position(tp)
                done = -1 if done is None else done - 1
            lag[f"{tp.topic}/{tp.partition}"] = behind = max(0, end - done - 1)
            runtime.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(behind)
        runtime.health.lag(lag)
        runtime.metrics.ready.set(int(runtime.ready_now() and app.rebalancing_count > 0
                                      and not app.rebalancing and not runtime.health.problems()))


def denied(web: View, request: Request, token: str) -> Response | None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (no token set:
    every request passes)."""
    if not token:
        return None
    given = request.headers.get("Authorization", "")
    if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return None
    response = web.json({"error": "missing or wrong bearer token"}, status=401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="stream-app"'
    return response


def register_views(app: faust.App, runtime: Runtime) -> None:
    register_health(app, runtime)
    token = runtime.settings.api_token

    @app.page("/stats")
    async def stats(web: View, request: Request) -> Response:
        if (refused := denied(web, request, token)) is not None:
            return refused
        if not runtime.ready_now():
            return web.json({"status": "starting"}, status=503)
        return web.json(await runtime.stats())

    register_metrics(app, runtime.metrics)

    @app.page("/users/{user_id}/interests")
    async def interests(web: View, request: Request, user_id: str) -> Response:
        if (refused := denied(web, request, token)) is not None:
            return refused
        await runtime.ready()
        found = await runtime.interests(user_id)
        if found is None:
            return web.json({"error": f"no interests for user {user_id!r}"}, status=404)
        return web.json(found)

    @app.page("/users/{user_id}/recommendations")
    async def recommendations(web: View, request: Request, user_id: str) -> Response:
        if (refused := denied(web, request, token)) is not None:
            return refused
        await runtime.ready()
        try:
            k = int(request.query.get("k", runtime.settings.top_k))
        except ValueError:
            return web.json({"error": "k must be an integer"}, status=400)
        if not 1 <= k <= runtime.settings.max_k:
            return web.json({"error": f"k must be in 1..{runtime.settings.max_k}"}, status=400)
        version, items = await runtime.recommend(user_id, k)
        return web.json({"user_id": user_id, "model_version": version,
                         "items": [{"item_id": i, "score": round(s, 6), "reason": r}
                                   for i, s, r in items]})

    from stream_app.console import register_console  # console.py imports this module
    register_console(app, runtime)
