"""The Python client against a running deployment (docs/client.md).

    stream-app up                 # first shell; it prints an `export ...` line
    export KAFKA_BOOTSTRAP_SERVERS=... WORKER_URL=...   # second shell: paste that line
    python examples/client_example.py

Reads KAFKA_BOOTSTRAP_SERVERS, WORKER_URL and any STREAM_APP_* setting (topic names,
STREAM_APP_API_TOKEN) from the environment. Sends three items and a user's activity,
shows that a bad event is refused at the call, waits for the user's recommendation on
the recommendations topic, sends feedback on its top item, asks the worker for a
fresh ranking over HTTP, and finally forgets the user. Exits 1 when no
recommendation arrives within 60 s.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from stream_app.client import Client, ContractError, Recommendation, RecommendationStream

ITEMS = [
    {"item_id": "client-example-1", "title": "Orbit of Quiet Stars",
     "text": "A lone pilot drifts between dying stars, searching for a signal from home.",
     "tags": ["sci-fi", "space"]},
    {"item_id": "client-example-2", "title": "The Last Relay Station",
     "text": "Engineers on a remote space station race to repair the relay before the storm.",
     "tags": ["sci-fi", "thriller"]},
    {"item_id": "client-example-3", "title": "Letters from the Lighthouse",
     "text": "Two strangers fall in love through letters left in an old lighthouse.",
     "tags": ["romance", "drama"]},
]


async def recommendation_for(stream: RecommendationStream, event_id: str) -> Recommendation:
    async for rec in stream:
        if rec.event_id == event_id:
            return rec
    raise RuntimeError("the stream ended")


async def main() -> int:
    user = f"client-example-{uuid.uuid4().hex[:8]}"
    async with Client.from_env() as client:
        print(f"client: {client!r}")
        await client.send_item_batch(ITEMS)
        print(f"sent {len(ITEMS)} items to {client.topic_items}")

        try:  # refused here, with the reason a worker would give the dead letter
            await client.send_activity(user, "rate", "client-example-1", rating=99)
        except ContractError as err:
            print(f"refused before sending: {err.reason}: {err}")

        async with client.recommendations([user]) as stream:  # reading starts now
            sent = await client.send_activity(
                user, "text", text="I like stories about pilots and lonely space stations")
            print(f"sent activity {sent['event_id']} for {user}")
            try:
                rec = await asyncio.wait_for(recommendation_for(stream, sent["event_id"]), 60)
            except asyncio.TimeoutError:
                print("no recommendation within 60 s: is a worker running?", file=sys.stderr)
                return 1
        print(f"recommendation {rec.recommendation_id} ({rec.model_version}):")
        for item in rec.items[:5]:
            print(f"  {item.item_id:24} {item.score:7.3f}  {item.reason}")

        if rec.items:  # the user clicks the top item of that recommendation
            top = rec.items[0].item_id
            await client.send_feedback(user, top, "click",
                                       recommendation_id=rec.recommendation_id)
            print(f"sent feedback: {user} clicked {top}")

        ranking = await client.recommend(user, k=5)  # HTTP, with the token when set
        print(f"fresh ranking over HTTP ({ranking.model_version}): {ranking.item_ids}")

        forgotten = await client.forget(user)
        print(f"sent forget {forgotten['event_id']} for {user}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
