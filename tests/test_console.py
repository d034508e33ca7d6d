"""The web console: per-user history in Redis (appended per event, capped, expiring,
forgotten), its endpoints, and the pages in a real headless Chromium (DevTools protocol)
against a running worker; screenshots go to ``test-artifacts/console/``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stream_app.embedded import free_port
from stream_app.faults import is_infrastructure
from stream_app.loading import load_catalog
from stream_app.store import _decode_history, connect
from stream_app.versions import Registry
from tests.conftest import make_settings
from tests.harness import running
from tests.test_trainer import T0, World, _settings

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts" / "console"
TOKEN = "console-test-token"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _clicks(user: str, items: list[str], start: int = 0, kind: str = "click") -> list[dict]:
    return [{"event_id": f"{user}-{start + n}", "user_id": user, "type": kind, "item_id": item,
             "ts": T0 + 60.0 * (start + n)} for n, item in enumerate(items)]


async def _history_raw(w: World, user: str) -> list[dict]:
    return await w.store.read_history(user)


# --- history in Redis ---------------------------------------------------------
def test_a_snapshot_per_applied_event_capped_expiring_in_one_pipeline_per_batch(redis_url):
    s = _settings(redis_url, user_history=4, user_ttl_s=3600.0)

    async def go() -> None:
        async with World(s) as w:
            calls = []
            append = w.store.append_history

            async def counted(entries, keep, ttl_s):
                calls.append(len(entries))
                await append(entries, keep, ttl_s)
            w.store.append_history = counted

            first = _clicks("u", ["i1", "i2"]) + _clicks("v", ["i3"])
            out = await w.processor.process_activity(w.records(s.topic_activity, first))
            assert calls == [3]
            history = await _history_raw(w, "u")
            assert [e["id"] for e in history] == ["u-0", "u-1"]
            emitted = {r["event_id"]: r for _, r in out.recommendations}
            for entry in history:  # the list each event got, as emitted
                assert entry["top"] == [[i["item_id"], round(i["score"], 4)]
                                        for i in emitted[entry["id"]]["items"]]
                assert entry["type"] == "click" and entry["item"] in ("i1", "i2")
            # each interest's strength as of the event, and what shaped it
            state = (await w.store.read_users(["u"]))["u"].state
            assert [[x, src] for x, src, _ in history[-1]["i"]] == \
                [[round(float(x), 4), i.source] for i, x in
                 zip(state.interests, state.strengths(T0 + 60.0, w.processor.params))]
            assert history[0]["i"][0][2] == 1  # the first event opened its interest

            more = (_clicks("u", ["i4", "i5"], start=2)
                    + [{"event_id": "u-t", "user_id": "u", "type": "text",
                        "text": "my secret taste in films", "ts": T0 + 500}])
            await w.processor.process_activity(w.records(s.topic_activity, more))
            again = await w.processor.process_activity(w.records(s.topic_activity, more))
            assert again.counts["duplicates"] == 3
            assert calls == [3, 3]  # one pipeline per batch, none for nothing applied
            history = await _history_raw(w, "u")
            assert [e["id"] for e in history] == ["u-1", "u-2", "u-3", "u-t"]  # capped at 4
            raw = await w.client.lrange(w.store.keys.history("u"), 0, -1)
            # no user text without show_user_text (entries are compressed: read decoded)
            assert "secret" not in json.dumps([_decode_history(e) for e in raw])
            assert history[-1]["text"] == "" and history[-1]["type"] == "text"
            ttl = await w.client.ttl(w.store.keys.history("u"))
            assert 0 < ttl <= 3600
            assert len(await _history_raw(w, "v")) == 1

    run(go())


def test_forget_removes_the_history_and_what_came_before_it_in_the_batch(redis_url):
    s = _settings(redis_url, user_ttl_s=0.0)

    async def go() -> None:
        async with World(s) as w:
            await w.processor.process_activity(w.records(s.topic_activity,
                                                         _clicks("u", ["i1", "i2"])))
            key = w.store.keys.history("u")
            assert await w.client.llen(key) == 2 and await w.client.ttl(key) == -1  # no TTL
            forget = [{"event_id": "bye", "user_id": "u", "type": "forget", "ts": T0 + 100}]
            await w.processor.process_activity(w.records(s.topic_activity, forget))
            assert not await w.client.exists(key)
            batch = (_clicks("u", ["i3"], start=10)
                     + [{"event_id": "bye2", "user_id": "u", "type": "forget", "ts": T0 + 700}]
                     + _clicks("u", ["i4"], start=20))
            await w.processor.process_activity(w.records(s.topic_activity, batch))
            assert [e["id"] for e in await _history_raw(w, "u")] == ["u-20"]

    run(go())


def test_history_off_keeps_nothing(redis_url):
    s = _settings(redis_url, user_history=0)

    async def go() -> None:
        async with World(s) as w:
            await w.processor.process_activity(w.records(s.topic_activity, _clicks("u", ["i1"])))
            assert not await w.client.exists(w.store.keys.history("u"))
            assert (await w.store.read_users(["u"]))["u"].state.n_events == 1

    run(go())


def test_a_failed_history_write_is_retried_with_the_batch_and_loses_nothing(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            append = w.store.append_history
            fail = [True]

            async def flaky(entries, keep, ttl_s):
                if fail.pop() if fail else False:
                    raise ConnectionError("Redis went away")
                await append(entries, keep, ttl_s)
            w.store.append_history = flaky
            batch = w.records(s.topic_activity, _clicks("u", ["i1", "i2"]))
            with pytest.raises(ConnectionError) as failure:
                await w.processor.process_activity(batch)
            assert is_infrastructure(failure.value)  # the batch is retried, not dead-lettered
            assert (await w.store.read_users(["u"]))["u"].state.n_events == 2  # state kept
            out = await w.processor.process_activity(batch)  # the retry
            assert out.counts["applied"] == 2
            assert [e["id"] for e in await _history_raw(w, "u")] == ["u-0", "u-1"]

    run(go())


# --- a worker, its endpoints and the pages -----------------------------------------
GENRES = ("romance", "sci-fi", "horror")


@pytest.fixture(scope="module")
def console(kafka_bootstrap, redis_url, sample_catalog, tmp_path_factory):
    """One worker (with a token) that has applied a scripted drift romance -> sci-fi ->
    horror for one user, dead-lettered a broken record, and a registry with a promoted,
    a refused and a reverted version."""
    settings = make_settings(kafka_bootstrap, redis_url, "console").replace(api_token=TOKEN)
    items = {g: [i for i in sample_catalog if i["tags"][0] == g][:12] for g in GENRES}
    catalog = [i for g in GENRES for i in items[g]]
    user, day = "console-user", 86400.0
    events = [{"event_id": f"r{n}", "user_id": user, "type": kind, "item_id": i["item_id"],
               "ts": T0 + n * 3600} for n, (kind, i) in
              enumerate(zip(["click", "like", "view", "like"], items["romance"]))]
    events.append({"event_id": "t1", "user_id": user, "type": "text",
                   "text": "I like watching movies, especially science fiction",
                   "ts": T0 + 10 * day})
    events += [{"event_id": f"s{n}", "user_id": user, "type": kind, "item_id": i["item_id"],
                "ts": T0 + 10 * day + (n + 1) * 3600} for n, (kind, i) in
               enumerate(zip(["click", "like", "like", "dislike"],
                             items["sci-fi"][:3] + items["romance"][5:6]))]
    events.append({"event_id": "q1", "user_id": user, "type": "search",
                   "text": "haunted house ghosts", "ts": T0 + 25 * day})
    events += [{"event_id": f"h{n}", "user_id": user, "type": kind, "item_id": i["item_id"],
                "ts": T0 + 25 * day + (n + 1) * 3600} for n, (kind, i) in
               enumerate(zip(["click", "like", "like", "purchase"], items["horror"]))]
    with running(settings, tmp_path_factory.mktemp("console")) as h:
        worker = h.start_worker()
        worker.wait_healthy(180)
        assert run(load_catalog(settings, kafka_bootstrap, catalog, timeout=120,
                                progress=False)) == len(catalog)
        h.produce(settings.topic_activity, [*events, (user, b"{not json")])
        recs = h.recommendations_for({e["event_id"] for e in events}, timeout=120)
        assert len(recs) == len(events)
        base = _get(worker.url, "/stats")[1]["base_model_version"]
        run(_versions(settings, base))
        yield {"worker": worker, "settings": settings, "user": user, "events": events,
               "items": items, "base": base, "harness": h}


async def _versions(settings, base: str) -> None:
    """What the trainer and an operator leave in the registry: ft1 promoted, ft2 refused,
    then a revert to the plain encoder (written as they write it, without checkpoints)."""
    client = connect(settings.redis())
    reg = Registry(client, settings.key_prefix, base)
    now = time.time()
    rows = [(f"{base}+ft00001", True, "better than the current version", 0.21, 0.18),
            (f"{base}+ft00002", False, "below the current version", 0.12, 0.2)]
    for n, (version, promoted, reason, ours, theirs) in enumerate(rows):
        meta = {"type": "trained", "version": version, "parent": base, "base_version": base,
                "created_at": now - 600 + 300 * n, "promoted": promoted, "reason": reason,
                "examples": {"train": 800, "heldout": 200, "replayed": 0},
                "heldout": {"candidate": {"hr@10": ours * 2, "ndcg@10": ours, "n": 200},
                            "current": {"hr@10": theirs * 2, "ndcg@10": theirs, "n": 200},
                            "base": {"hr@10": 0.3, "ndcg@10": 0.15, "n": 200}},
                "reverted_to": None}
        if promoted:
            meta["promotions"] = [{"at": now - 590, "reason": "trainer: " + reason}]
        await client.hset(reg._meta, version, json.dumps(meta))
    await client.rpush(reg._history, f"{base}+ft00001", base)
    await client.aclose()


def _get(url: str, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        body, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
    return status, json.loads(body) if "json" in ctype else body.decode()


def test_console_endpoints_and_auth(console):
    url, user, events = console["worker"].url, console["user"], console["events"]
    status, page = _get(url, "/ui/", token=None)  # the page asks for the token itself
    assert status == 200 and "console.js" in page
    for path in ("/ui/console.js", "/ui/chart.js", "/ui/console.css"):
        assert _get(url, path, token=None)[0] == 200
    assert _get(url, "/ui/secrets.txt", token=None)[0] == 404
    for path in (f"/users/{user}/history", "/models", "/live"):
        assert _get(url, path, token=None)[0] == 401
        assert _get(url, path, token="wrong")[0] == 401

    status, history = _get(url, f"/users/{user}/history")
    assert status == 200 and history["keep"] == 50
    entries = history["entries"]
    assert [e["event_id"] for e in entries] == [e["event_id"] for e in events]
    text = next(e for e in entries if e["event_id"] == "t1")
    assert text["text"] == "what you wrote" and text["item"] is None
    first = entries[0]
    assert first["item"]["label"] == console["items"]["romance"][0]["title"]
    assert first["interests"][0]["opened"] and first["interests"][0]["shaped_by"]["label"] \
        == first["item"]["label"]
    assert len(first["top"]) == console["settings"].top_k and first["top"][0]["label"]
    assert _get(url, f"/users/{user}/history?last=3")[1]["entries"] == entries[-3:]
    assert _get(url, "/users/nobody/history")[1]["entries"] == []

    models = _get(url, "/models")[1]
    base = console["base"]
    assert models["current"] == models["serving"] == models["base_version"] == base
    assert [v["version"] for v in models["versions"]] == [f"{base}+ft00001", f"{base}+ft00002"]
    assert [(c["version"], c["kind"]) for c in models["changes"]] == \
        [(f"{base}+ft00001", "promotion"), (base, "revert")]

    live = _get(url, "/live")[1]
    assert live["ready"] and live["recommendations"] >= len(events)
    assert {"topic": console["settings"].topic_activity, "reason": "not_json",
            "count": 1.0} in live["dead_letters"]
    assert live["latency"]["count"] >= len(events) and live["latency"]["buckets"]


# --- the pages in a real browser ------------------------------------------------
def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable", "chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium to drive: install Debian's `chromium` package "
                    "(apt-get install chromium) or set CHROMIUM to a Chrome/Chromium binary")
    return path


class Browser:
    """Headless Chromium over the DevTools protocol (aiohttp's websocket client): one tab,
    its console errors, exceptions and failed requests collected."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable, self.profile = executable, profile
        self.port = free_port()
        self.events: list[dict] = []
        self._pending: dict[int, asyncio.Future] = {}
        self._n = 0

    async def __aenter__(self) -> "Browser":
        self.log = open(self.profile / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--hide-scrollbars", "--mute-audio", f"--remote-debugging-port={self.port}",
             f"--user-data-dir={self.profile / 'profile'}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.http = aiohttp.ClientSession()
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.get(f"http://127.0.0.1:{self.port}/json/version") as r:
                    ws_url = (await r.json())["webSocketDebuggerUrl"]
                break
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("Chromium did not start: "
                                       + (self.profile / "chromium.log").read_text()[-2000:])
                await asyncio.sleep(0.2)
        self.ws = await self.http.ws_connect(ws_url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        self.session = (await self.call("Target.attachToTarget",
                                        {"targetId": target["targetId"], "flatten": True})
                        )["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.call(f"{domain}.enable", session=True)
        await self.viewport(1280, 900)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.http.close()
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, params: dict | None = None, session: bool = False,
                   timeout: float = 30.0) -> dict:
        self._n += 1
        message: dict[str, Any] = {"id": self._n, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        future = asyncio.get_running_loop().create_future()
        self._pending[self._n] = future
        await self.ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    async def viewport(self, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True)

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", {"url": "about:blank"}, session=True)
        await self.call("Page.navigate", {"url": url}, session=True)

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:  # the page may not be there yet
            value = await self.eval(f"(() => {{ try {{ return ({expression}); }} "
                                    "catch (e) { return false; } })()")
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.eval("document.body ? document.body.innerText : ''")
                raise TimeoutError(f"{expression} still false; page text: {text[:1500]}"
                                   f"; problems: {self.problems()}")
            await asyncio.sleep(0.2)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed and non-2xx/3xx requests so far."""
        out = []
        for e in self.events:
            method, p = e["method"], e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
            elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
                out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        return out

    async def screenshot(self, path: Path) -> None:
        """The whole page, not only the viewport."""
        height = await self.eval("Math.ceil(document.documentElement.scrollHeight)")
        await self.viewport(1280, max(900, min(int(height), 6000)))
        await asyncio.sleep(0.3)
        shot = await self.call("Page.captureScreenshot", {"format": "png"}, session=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        await self.viewport(1280, 900)


def test_console_pages_render_with_data_in_a_real_browser(chromium, console, tmp_path):
    url, user, s = console["worker"].url, console["user"], console["settings"]
    interests = _get(url, f"/users/{user}/interests")[1]
    titles = {g: {i["title"] for i in console["items"][g]} for g in GENRES}

    async def go() -> None:
        async with Browser(chromium, tmp_path) as b:
            # without a token the page asks for it (the 401s are the only errors allowed)
            await b.goto(f"{url}/ui/#/models")
            await b.wait_for("document.getElementById('main').dataset.state === 'auth'")
            await b.eval(f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
                         "document.querySelector('#main form').requestSubmit(); true")
            await b.wait_for("document.getElementById('main').dataset.state === 'ready'")
            assert b.problems() and all("401" in p for p in b.problems()), b.problems()
            assert await b.eval("sessionStorage.getItem('stream-app-token')") == TOKEN
            b.events.clear()

            # 1. the user: interests over time, what shaped them, the lists and their changes
            await b.goto(f"{url}/ui/#/user/{user}")
            await b.wait_for("document.getElementById('main').dataset.state === 'ready'")
            text = await b.eval("document.getElementById('main').innerText")
            for interest in interests["interests"]:
                assert ", ".join(interest["label"]) in text
            legend = await b.eval("document.getElementById('timeline-legend').innerText")
            for genre in ("romance", "horror"):  # the drift, by what shaped the interests
                assert any(t in legend for t in titles[genre]), (genre, legend)
            assert await b.eval("document.querySelectorAll('#timeline svg path').length") >= 2
            assert await b.eval("document.querySelectorAll('#timeline svg .marker').length") \
                == len(console["events"])
            assert await b.eval("document.querySelectorAll('#recs-table tbody tr').length") \
                == s.top_k
            assert await b.eval("document.querySelectorAll('#changes-table tbody tr').length") \
                == 10
            assert await b.eval("document.querySelectorAll('#changes-table .chip.new').length")
            assert await b.eval(
                "document.querySelectorAll('#changes-table .chip.dropped').length")
            await b.screenshot(ARTIFACTS / "user.png")
            # event time to scale draws the same series
            await b.eval("[...document.querySelectorAll('button.toggle')][1].click(); true")
            assert await b.eval("document.querySelectorAll('#timeline svg path').length") >= 2
            await b.screenshot(ARTIFACTS / "user-time-scale.png")

            # 2. models: versions, held-out scores, promotions and reverts, the one in use
            await b.goto(f"{url}/ui/#/models")
            await b.wait_for("document.getElementById('main').dataset.state === 'ready'")
            base = console["base"]
            assert await b.eval("document.querySelectorAll('#versions-table tbody tr').length") \
                == 2
            text = await b.eval("document.getElementById('main').innerText")
            for needle in (f"{base}+ft00001", f"{base}+ft00002", "promotion", "revert",
                           "0.21", "kept out", f"this worker ranks with {base}"):
                assert needle in text, needle
            assert await b.eval("document.querySelectorAll('#versions-chart svg path').length") \
                == 3
            await b.screenshot(ARTIFACTS / "models.png")

            # 3. live: rates from successive polls, latency, lag, dead letters by reason
            await b.goto(f"{url}/ui/#/live")
            await b.wait_for("Number(document.getElementById('main').dataset.polls) >= 1", 30)
            more = [{"event_id": f"l{n}", "user_id": f"live-{n % 3}", "type": "click",
                     "item_id": console["items"]["sci-fi"][n]["item_id"], "ts": T0 + n}
                    for n in range(10)]
            await asyncio.to_thread(console["harness"].produce, s.topic_activity, more)
            emitted = len(console["events"]) + len(more)
            await b.wait_for("parseInt(document.querySelector('#live-recs .sub').innerText"
                             f".replace(/,/g, '')) >= {emitted}", 60)
            polls = await b.eval("Number(document.getElementById('main').dataset.polls)")
            await b.wait_for(f"Number(document.getElementById('main').dataset.polls) > {polls}")
            throughput = await b.eval(
                "document.querySelector('#live-throughput .value').innerText")
            assert throughput.endswith("/s") and throughput[0].isdigit(), throughput
            latency = await b.eval("document.querySelector('#live-latency .value').innerText")
            assert latency[0].isdigit() and latency.endswith("s"), latency
            assert "not_json" in await b.eval("document.getElementById('dead-letters').innerText")
            assert s.topic_activity in await b.eval(
                "document.getElementById('records').innerText")
            assert await b.eval("document.querySelector('#live-recs .value').innerText")
            await b.screenshot(ARTIFACTS / "live.png")

            assert b.problems() == []

    run(go())
    for page in ("user", "models", "live"):
        assert (ARTIFACTS / f"{page}.png").stat().st_size > 10_000
