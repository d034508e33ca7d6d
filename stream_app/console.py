"""The web console at ``/ui/``: static pages shipped in the package (``stream_app/console/``,
no CDN: it works offline) and the JSON they read.

The page itself loads without a token; with ``api_token`` set it asks for it, keeps it in
the tab's sessionStorage and sends it as a bearer token to the data endpoints, which
answer 401 without it, like the rest of the API:

  /users/{id}/history  the user's snapshots after each applied event (``user_history``)
  /models              model versions, held-out scores, promotions and reverts, the one in use
  /live                this worker's metrics as JSON (the page computes rates from two polls)
"""

from __future__ import annotations

from importlib import resources

import faust
from faust.web import Request, Response, View

from stream_app.runtime import Runtime
from stream_app.web import denied

ASSETS = {  # what /ui/ serves, and nothing else
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
    "chart.js": "text/javascript",
}
# only the worker's own files and data: no CDN, no inline script
POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
          "connect-src 'self'; frame-ancestors 'none'")


def load_assets() -> dict[str, bytes]:
    root = resources.files("stream_app") / "console"
    return {name: (root / name).read_bytes() for name in ASSETS}


def register_console(app: faust.App, runtime: Runtime) -> None:
    token = runtime.settings.api_token
    assets = load_assets()

    def asset(web: View, name: str) -> Response:
        response = web.bytes(assets[name], content_type=ASSETS[name])
        response.charset = "utf-8"
        response.headers.update({"Content-Security-Policy": POLICY, "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})
        return response

    @app.page("/ui")
    async def ui_root(web: View, request: Request) -> Response:
        response = web.bytes(b"", status=302)
        response.headers["Location"] = "/ui/"
        return response

    @app.page("/ui/")
    async def ui_index(web: View, request: Request) -> Response:
        return asset(web, "index.html")

    @app.page("/ui/{name}")
    async def ui_file(web: View, request: Request, name: str) -> Response:
        if name not in assets:
            return web.json({"error": f"no such file {name!r}"}, status=404)
        return asset(web, name)

    @app.page("/users/{user_id}/history")
    async def history(web: View, request: Request, user_id: str) -> Response:
        if (refused := denied(web, request, token)) is not None:
            return refused
        try:
            last = int(request.query.get("last", 0))
        except ValueError:
            return web.json({"error": "last must be an integer"}, status=400)
        await runtime.ready()
        return web.json(await runtime.history(user_id, max(last, 0)))

    @app.page("/models")
    async def models(web: View, request: Request) -> Response:
        if (refused := denied(web, request, token)) is not None:
            return refused
        await runtime.ready()
        return web.json(await runtime.models())

    @app.page("/live")
    async def live(web: View, request: Request) -> Response:
        if (refused := denied(web, request, token)) is not None:
            return refused
        return web.json(runtime.live())
