"""`stream-app demo`: a scripted user whose taste drifts, on the embedded default."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from stream_app.catalog_files import read_jsonl
from stream_app.config import Settings
from stream_app.kafka_io import Producer, consume, ensure_topics
from stream_app.loading import load_catalog
from stream_app.processes import local_system


def bundled(name: str) -> Path:
    return Path(str(resources.files("stream_app") / "data" / name))


def run_demo(settings: Settings, timeout: float) -> int:
    print("stream-app demo: starting the embedded default and a worker "
          "(loads the model, joins the consumer group)...", flush=True)
    # a scripted user: the reasons may quote what it typed
    with local_system(settings.replace(show_user_text=True)) as (stack, s, _):
        print(", ".join(f"{k} {v}" for k, v in stack.describe().items()), flush=True)
        run = uuid.uuid4().hex[:6]
        console = f"http://127.0.0.1:{s.web_port}/ui/"
        print(f"console: {console} (the demo user: {console}#/user/demo-user-{run})", flush=True)
        code = asyncio.run(asyncio.wait_for(_play(s, run), timeout))
        if sys.stdin.isatty():  # a person at a terminal: the console stays up to look at
            try:
                input(f"\nthe demo user's drift: {console}#/user/demo-user-{run}\n"
                      "press Enter to stop ")
            except (EOFError, KeyboardInterrupt):
                pass
        return code


async def _play(s: Settings, run: str) -> int:
    items = list(read_jsonl(bundled("sample_catalog.jsonl")))
    script = list(read_jsonl(bundled("demo_script.jsonl")))
    info = {i["item_id"]: (i["title"], i["tags"][0]) for i in items}
    bootstrap = s.kafka()
    await ensure_topics(bootstrap, [s.topic_activity, s.topic_recommendations],
                        s.topic_partitions, s.topic_replication)
    done = await load_catalog(s, bootstrap, items)
    print(f"catalog: {done} items embedded\n", flush=True)

    user = f"demo-user-{run}"
    recs = consume(bootstrap, s.topic_recommendations)
    dominant = []
    async with Producer(bootstrap) as producer:
        for n, step in enumerate(script, 1):
            event = {k: v for k, v in step.items() if k != "note"}
            event.update(user_id=user, event_id=f"{run}-{step['event_id']}")
            await producer.send(s.topic_activity, event, key=user)
            rec = await _next_for(recs, event["event_id"])
            when = datetime.fromtimestamp(step["ts"], timezone.utc).strftime("%Y-%m-%d %H:%M")
            genres = Counter(info[i["item_id"]][1] for i in rec["items"] if i["item_id"] in info)
            dominant.append(genres.most_common(1)[0][0] if genres else "-")
            print(f"{n:2d}. {when}  {step['type']:<8} {step.get('note', '')}")
            top = " · ".join(f"{info[i['item_id']][0]} [{info[i['item_id']][1]}]"
                             for i in rec["items"][:3] if i["item_id"] in info)
            print(f"    top 3: {top}")
            if rec["items"]:
                print(f"    why #1: {rec['items'][0]['reason']}")
            print("    top 10 by genre: " + ", ".join(f"{g} {c}" for g, c in genres.most_common()),
                  flush=True)
    await recs.aclose()
    print(f"\ntaste drift seen by the recommender: {' -> '.join(_runs(dominant))}")
    print(f"model {rec['model_version']}; try `stream-app tail {s.topic_recommendations}` "
          "against `stream-app up` for the raw events.")
    return 0


async def _next_for(recs: Any, event_id: str) -> dict[str, Any]:
    """The recommendation triggered by this event (waits up to 30 s)."""
    async def find() -> dict[str, Any]:
        async for _, value in recs:
            if isinstance(value, dict) and value.get("event_id") == event_id:
                return value
        raise RuntimeError("recommendations topic ended")
    return await asyncio.wait_for(find(), 30.0)


def _runs(values: list[str]) -> list[str]:
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]
