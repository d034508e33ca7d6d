"""Scaling out: two workers split the partitions between them and both make progress."""

from __future__ import annotations

import time

import pytest

from tests.conftest import make_settings
from tests.harness import http, running, wait_catalog

pytestmark = pytest.mark.integration


def test_two_workers_split_the_partitions_and_both_progress(kafka_bootstrap, redis_url,
                                                            sample_catalog, tmp_path):
    settings = make_settings(kafka_bootstrap, redis_url, "split").replace(lag_interval_s=0.5)
    with running(settings, tmp_path) as h:
        workers = [h.start_worker(), h.start_worker()]
        for w in workers:
            w.wait_healthy(120)
        h.produce(settings.topic_items, sample_catalog[:20], key_field="item_id")
        wait_catalog(workers, 20)
        events = [{"event_id": f"s-{n}", "user_id": f"su{n % 40}", "type": "click",
                   "item_id": sample_catalog[n % 20]["item_id"], "ts": 1_760_000_000.0 + n}
                  for n in range(200)]
        h.produce(settings.topic_activity, events)
        h.recommendations_for({e["event_id"] for e in events}, timeout=120)

        def activity(stats):
            return {p for p in stats["assigned_partitions"]
                    if p.startswith(settings.topic_activity + "/")}

        deadline = time.monotonic() + 30
        while True:  # the assignment is sampled by the lag timer
            stats = [http(w, "/stats")[1] for w in workers]
            mine = [activity(st) for st in stats]
            if all(mine) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert all(mine), mine  # each worker owns activity partitions ...
        assert not mine[0] & mine[1]  # ... none twice ...
        assert len(mine[0] | mine[1]) == settings.topic_partitions  # ... and all of them
        applied = [st["worker"].get("applied", 0) for st in stats]
        assert all(n > 0 for n in applied) and sum(applied) == len(events), applied
