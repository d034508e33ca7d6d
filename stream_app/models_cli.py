"""`stream-app model list|promote|rollback`: the operator's side of the version registry.

Changes go to Redis (workers follow within ``model_poll_interval_s``) and are
announced on the model-updates topic when a broker is reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from stream_app.config import Settings
from stream_app.encoder import encoder_version
from stream_app.store import connect
from stream_app.versions import Registry, UnknownVersion


def base_version(s: Settings) -> str:
    """The encoder's version from its files (and `encoder_backend`), without loading it."""
    return encoder_version(s)


def run_model_command(s: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(s, args))
    except UnknownVersion as exc:
        print(f"unknown model version {exc}; `stream-app model list` shows the stored ones",
              file=sys.stderr)
        return 2
    except ValueError as exc:  # a broken version: never promoted
        print(f"refused: {exc}", file=sys.stderr)
        return 2


async def _run(s: Settings, args: argparse.Namespace) -> int:
    client = connect(s.redis())
    registry = Registry(client, s.key_prefix, base_version(s))
    try:
        if args.model_command == "list":
            print(format_versions(await registry.versions(), await registry.current(),
                                  registry.base_version))
            return 0
        before = await registry.current()
        if args.model_command == "promote":
            await registry.promote(args.version, reason="operator")
            version = args.version
        else:
            version = await registry.rollback(args.version)
        announcement = {"type": "promoted" if args.model_command == "promote" else "rolled_back",
                        "version": version, "previous": before, "by": "operator",
                        "created_at": time.time()}
        print(json.dumps(announcement))
        await announce(s, announcement)
        return 0
    finally:
        await client.aclose()


async def announce(s: Settings, announcement: dict[str, Any]) -> None:
    """Best effort: the registry already changed; the topic only tells who listens."""
    from stream_app.kafka_io import Producer

    async def send() -> None:
        async with Producer(s.kafka()) as producer:
            await producer.send(s.topic_model_updates, announcement, announcement["version"])

    try:
        await asyncio.wait_for(send(), 15)
    except Exception as exc:  # noqa: BLE001 - Kafka down must not undo a promotion
        print(f"warning: not announced on {s.topic_model_updates}: {exc!r}", file=sys.stderr)


def format_versions(rows: list[dict[str, Any]], current: str, base: str) -> str:
    lines = [f"{'version':<40} {'current':<8} {'promoted':<9} {'examples':>9} "
             f"{'cand ndcg':>9} {'prev ndcg':>9}  created"]
    lines.append(f"{base:<40} {'*' if current == base else '':<8} {'base':<9}")
    for r in rows:
        held = r.get("heldout", {})
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("created_at", 0)))
        lines.append(f"{r['version']:<40} {'*' if r['current'] else '':<8} "
                     f"{str(r.get('promoted', '')):<9} "
                     f"{r.get('examples', {}).get('train', ''):>9} "
                     f"{held.get('candidate', {}).get('ndcg@10', ''):>9} "
                     f"{held.get('current', {}).get('ndcg@10', ''):>9}  {created}")
    return "\n".join(lines)
