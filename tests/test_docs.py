"""The docs users code against say what the code does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from stream_app.config import Settings, env_name, settings_table
from stream_app.contract import ACTIVITY_TYPES, FEEDBACK_TYPES

DOCS = Path(__file__).parent.parent / "docs"


def test_configuration_doc_is_the_generated_table():
    assert settings_table() in (DOCS / "configuration.md").read_text()


def test_contract_doc_names_every_topic_type_and_output_field():
    text = (DOCS / "contract.md").read_text()
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.name.startswith("topic_") and f.name not in ("topic_partitions",
                                                          "topic_replication"):
            assert f"`{getattr(defaults, f.name)}`" in text, f.name
    for kind in ACTIVITY_TYPES | FEEDBACK_TYPES:
        assert kind in text
    for field in ("recommendation_id", "event_ts", "model_version", "emitted_at", "reason",
                  "source_topic", "partition", "offset", "error", "payload"):
        assert f'"{field}"' in text


def test_every_setting_the_docs_name_exists():
    names = {env_name(f) for f in dataclasses.fields(Settings)}
    root = DOCS.parent
    for doc in [*DOCS.glob("*.md"), root / "README.md", root / "docker-compose.yml"]:
        for name in re.findall(r"STREAM_APP_[A-Z0-9_]+", doc.read_text()):
            assert name in names, f"{doc.name}: {name}"
