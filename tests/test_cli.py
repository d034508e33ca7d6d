"""The command line as a person meets it: help with defaults, one-line failures."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from stream_app.cli import build_parser
from stream_app.embedded import free_port
from tests.harness import run_python


def _options(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action, parser


def test_every_option_has_help_and_shows_its_default():
    for path, action, parser in _options(build_parser()):
        assert action.help, (path, action.dest)
        assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter, path


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("STREAM_APP_") and k not in ("KAFKA_BOOTSTRAP_SERVERS",
                                                              "REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "stream_app", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,env,status,expected", [
    (("tail", "recommendations", "--max", "1"), {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:{port}"},
     3, "cannot reach Kafka at 127.0.0.1:{port} (set KAFKA_BOOTSTRAP_SERVERS"),
    (("model", "list"), {"REDIS_URL": "redis://:hunter2@127.0.0.1:{port}/0"},
     3, "cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (set REDIS_URL"),
    (("model", "list"), {"STREAM_APP_TOP_K": "ten"}, 2, "bad setting: STREAM_APP_TOP_K"),
    (("tail", "x"), {"STREAM_APP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, 2,
     "bad setting: SASL_SSL needs STREAM_APP_KAFKA_SASL_USERNAME"),
    (("produce", "/nonexistent/events.jsonl", "--topic", "items"), {}, 2,
     "no such file: /nonexistent/events.jsonl"),
])
def test_a_failure_a_person_can_fix_is_one_line(args, env, status, expected):
    port = str(free_port())  # nothing listens there
    done = _run(*args, **{k: v.replace("{port}", port) for k, v in env.items()})
    assert done.returncode == status, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stream-app: "), done.stderr
    assert expected.replace("{port}", port) in lines[0]
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_tail_titles_adds_each_items_title():
    import asyncio

    from stream_app.cli import with_titles

    class Meta:
        async def item_meta(self, ids):
            return {i: {"title": f"Title of {i}"} for i in ids if i != "gone"}

    rec = {"user_id": "u", "items": [{"item_id": "m1", "score": 1.0}, {"item_id": "gone"}]}
    out = asyncio.run(with_titles(Meta(), rec))
    assert [i["title"] for i in out["items"]] == ["Title of m1", None]
    assert asyncio.run(with_titles(Meta(), {"item_id": "m2"}))["title"] == "Title of m2"


def test_drift_variants_are_found_by_name_not_split_on_commas():
    from stream_app.evaluation.commands import DRIFT_VARIANTS, drift_variants

    assert drift_variants("static: one vector, no decay") == ["static: one vector, no decay"]
    assert drift_variants("default,ablation: no decay") == ["default", "ablation: no decay"]
    assert drift_variants("item-kNN,popularity") == DRIFT_VARIANTS  # a dataset's variants
    assert drift_variants(None) == DRIFT_VARIANTS


def test_a_process_freezes_what_it_loaded_before_it_consumes():
    """``freeze_loaded_objects`` (called just before Faust starts) moves the loaded
    objects out of the garbage collector's sight, and says how many."""
    code = ("import gc, json\n"
            "from stream_app import logs\n"
            "from stream_app.cli import freeze_loaded_objects\n"
            "logs.setup('info')\n"
            "assert gc.get_freeze_count() == 0\n"
            "n = freeze_loaded_objects()\n"
            "print(json.dumps([n, gc.get_freeze_count()]))")
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    frozen, count = json.loads(done.stdout.strip().splitlines()[-1])
    assert frozen == count > 1000
    assert '"event": "gc_frozen"' in done.stdout + done.stderr
