"""HTTP on the worker: health, stats, a user's interests and recommendations, metrics."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from stream_app.metrics import Metrics
from stream_app.runtime import Runtime


def register_metrics(app: faust.App, metrics: Metrics) -> None:
    @app.page("/metrics")
    async def exposition(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")


def register_views(app: faust.App, runtime: Runtime) -> None:
    joined = False

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        """503 until Redis is loaded and the first group rebalance finished; 200 after."""
        nonlocal joined
        joined = joined or (runtime.ready_now() and app.rebalancing_count > 0
                            and not app.rebalancing)
        if not joined:
            return web.json({"status": "starting"}, status=503)
        return web.json({"status": "rebalancing" if app.rebalancing else "ok",
                         "model_version": runtime.catalog.adapter.version})

    @app.page("/stats")
    async def stats(web: View, request: Request) -> Response:
        if not runtime.ready_now():
            return web.json({"status": "starting"}, status=503)
        return web.json(await runtime.stats())

    register_metrics(app, runtime.metrics)

    @app.page("/users/{user_id}/interests")
    async def interests(web: View, request: Request, user_id: str) -> Response:
        await runtime.ready()
        found = await runtime.interests(user_id)
        if found is None:
            return web.json({"error": f"no interests for user {user_id!r}"}, status=404)
        return web.json(found)

    @app.page("/users/{user_id}/recommendations")
    async def recommendations(web: View, request: Request, user_id: str) -> Response:
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
