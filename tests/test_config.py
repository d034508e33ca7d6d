"""Settings: defaults, env var names, coercion, overrides, round trip, docs table."""

from __future__ import annotations

import dataclasses

import pytest

from stream_app.config import ENV_PREFIX, Settings, env_name, settings_table
from stream_app.model.scoring import BLEND_PARTS, Defaults
from stream_app.model.sequence import SequenceParams

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
UNPREFIXED = {"kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS", "redis_url": "REDIS_URL",
              "web_port": "WEB_PORT"}


def test_defaults():
    s = Settings()
    assert s.kafka_bootstrap_servers == ""
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.redis_cluster is False
    assert s.web_port == 6066
    assert s.web_host == "0.0.0.0"
    assert s.app_id == "stream-app"
    assert s.key_prefix == "sa"
    assert (s.topic_items, s.topic_activity, s.topic_recommendations, s.topic_feedback,
            s.topic_dead_letters) == ("items", "user-activity", "recommendations", "feedback",
                                      "dead-letters")
    assert s.topic_partitions == 8 and s.topic_replication == 1
    assert s.long_half_life_s == 21 * 86400.0
    assert s.rating_neutral == 3.0
    assert s.top_k == 10 and s.max_k == 100
    assert s.exclude_seen is True
    assert s.dedupe_window == 256
    assert s.max_text_chars == 2000 and s.max_record_bytes == 1_000_000
    assert s.log_level == "info" and s.data_dir == ""


def test_from_empty_env_equals_defaults():
    assert Settings.from_env({}) == Settings()


def test_event_weights_cover_every_activity_type():
    from stream_app.contract import ACTIVITY_TYPES, FORGET

    w = Settings().event_weights()
    assert set(w) == set(ACTIVITY_TYPES) - {FORGET}  # forget removes, it weighs nothing
    assert w == {"view": 0.5, "click": 1.0, "like": 2.0, "purchase": 3.0, "rate": 0.5,
                 "search": 1.0, "text": 1.5, "dislike": -1.5, "skip": -0.3}


def test_env_names():
    for name, f in FIELDS.items():
        expected = UNPREFIXED.get(name, ENV_PREFIX + name.upper())
        assert env_name(f) == expected, name
    assert env_name(FIELDS["top_k"]) == "STREAM_APP_TOP_K"
    assert env_name(FIELDS["long_half_life_s"]) == "STREAM_APP_LONG_HALF_LIFE_S"
    assert len({env_name(f) for f in FIELDS.values()}) == len(FIELDS)


def test_unprefixed_endpoints_are_read():
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
                           "REDIS_URL": "redis://r:6380/2", "WEB_PORT": "8080"})
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.redis_url == "redis://r:6380/2"
    assert s.web_port == 8080
    # the prefixed spelling is not the name of these three
    s = Settings.from_env({"STREAM_APP_REDIS_URL": "redis://other/0",
                           "STREAM_APP_WEB_PORT": "1"})
    assert s.redis_url == "redis://127.0.0.1:6379/0" and s.web_port == 6066


def test_coercion_of_each_kind():
    s = Settings.from_env({
        "STREAM_APP_TOP_K": "25", "STREAM_APP_LONG_HALF_LIFE_S": "3600.5",
        "STREAM_APP_WEIGHT_DISLIKE": "-2", "STREAM_APP_KEY_PREFIX": "prod",
        "STREAM_APP_EXCLUDE_SEEN": "false", "STREAM_APP_REDIS_CLUSTER": "true"})
    assert s.top_k == 25 and type(s.top_k) is int
    assert s.long_half_life_s == 3600.5 and type(s.long_half_life_s) is float
    assert s.weight_dislike == -2.0 and type(s.weight_dislike) is float
    assert s.key_prefix == "prod"
    assert s.exclude_seen is False
    assert s.redis_cluster is True


@pytest.mark.parametrize("raw,expected", [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True), (" True ", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("off", False),
    ("", False)])
def test_bool_coercion(raw, expected):
    assert Settings.from_env({"STREAM_APP_REDIS_CLUSTER": raw}).redis_cluster is expected


@pytest.mark.parametrize("var,raw", [
    ("STREAM_APP_REDIS_CLUSTER", "maybe"),
    ("STREAM_APP_REDIS_CLUSTER", "2"),
    ("STREAM_APP_TOP_K", "ten"),
    ("STREAM_APP_TOP_K", "2.5"),
    ("WEB_PORT", "http"),
    ("STREAM_APP_LONG_HALF_LIFE_S", "a week"),
    ("STREAM_APP_TRAINER_BATCH_SIZE", "0"),
    ("STREAM_APP_TRAINER_HOLDOUT_FRACTION", "1.0"),
    ("STREAM_APP_TRAINER_HOLDOUT_FRACTION", "0"),
    ("STREAM_APP_TRAINER_SKIP_WEIGHT", "1.5"),
    ("STREAM_APP_TRAINER_SKIP_WEIGHT", "0"),
    ("STREAM_APP_TRAINER_EPOCHS", "0"),
    ("STREAM_APP_TRAINER_STEP_SIZE", "0"),
    ("STREAM_APP_TRAINER_NEGATIVES", "0"),
    ("STREAM_APP_TRAINER_FULL_SOFTMAX_ITEMS", "0"),
    ("STREAM_APP_SEQUENCE_DIM", "0"),
    ("STREAM_APP_SEQUENCE_BLOCKS", "0"),
    ("STREAM_APP_SEQUENCE_HEADS", "3"),  # must divide the width (64)
    ("STREAM_APP_SEQUENCE_DROPOUT", "1"),
    ("STREAM_APP_SEQUENCE_DROPOUT", "-0.1"),
    ("STREAM_APP_COVISIT_WEIGHT", "-1"),
    ("STREAM_APP_COVISIT_HISTORY", "-1"),
    ("STREAM_APP_COVISIT_KEEP", "0"),
    ("STREAM_APP_COVISIT_BACKWARD", "1.5"),
    ("STREAM_APP_COVISIT_BACKWARD", "-0.1"),
    ("STREAM_APP_COVISIT_RECENCY", "0"),
    ("STREAM_APP_COVISIT_LOG_MAX", "0"),
    ("STREAM_APP_RECENT_ITEMS", "-1"),
    ("STREAM_APP_MODEL_POLL_INTERVAL_S", "0"),
])
def test_bad_values_raise_value_error_naming_the_var(var, raw):
    with pytest.raises(ValueError) as info:
        Settings.from_env({var: raw})
    assert var in str(info.value)


def test_the_sequence_model_needs_its_items_represented_somehow():
    with pytest.raises(ValueError, match="STREAM_APP_SEQUENCE_ITEM_TEXT"):
        Settings.from_env({"STREAM_APP_SEQUENCE_ITEM_TEXT": "false",
                           "STREAM_APP_SEQUENCE_ITEM_IDS": "false"})
    for var in ("STREAM_APP_SEQUENCE_ITEM_TEXT", "STREAM_APP_SEQUENCE_ITEM_IDS"):
        Settings.from_env({var: "false"})  # either one alone is an ablation
    Settings.from_env({"STREAM_APP_SEQUENCE_HEADS": "4", "STREAM_APP_SEQUENCE_DIM": "32"})


def test_unrelated_env_vars_are_ignored():
    s = Settings.from_env({"PATH": "/bin", "STREAM_APP_NOT_A_FIELD": "x", "TOP_K": "3"})
    assert s == Settings()


def test_overrides_win_over_env():
    env = {"STREAM_APP_TOP_K": "25", "REDIS_URL": "redis://env/0"}
    s = Settings.from_env(env, top_k=7, key_prefix="over")
    assert s.top_k == 7
    assert s.key_prefix == "over"
    assert s.redis_url == "redis://env/0"


def test_replace_returns_new_settings():
    s = Settings()
    t = s.replace(top_k=3)
    assert t.top_k == 3 and s.top_k == 10


def test_env_round_trips_through_from_env():
    s = Settings()
    assert Settings.from_env(s.env()) == s
    custom = Settings(kafka_bootstrap_servers="a:1,b:2", redis_cluster=True, web_port=9,
                      long_half_life_s=1.0 / 3.0, weight_skip=-0.1, exclude_seen=False,
                      key_prefix="x y", data_dir="/tmp/d")
    env = custom.env()
    assert env["STREAM_APP_REDIS_CLUSTER"] == "true"
    assert env["STREAM_APP_EXCLUDE_SEEN"] == "false"
    assert env["WEB_PORT"] == "9"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "a:1,b:2"
    assert set(env) == {env_name(f) for f in FIELDS.values()}
    assert all(isinstance(v, str) for v in env.values())
    assert Settings.from_env(env) == custom


def test_settings_table_has_a_row_per_field():
    lines = settings_table().splitlines()
    assert lines[0] == "| env var | default | meaning |"
    assert lines[1] == "|---|---|---|"
    rows = lines[2:]
    assert len(rows) == len(FIELDS)
    for row, f in zip(rows, dataclasses.fields(Settings)):
        assert row.startswith(f"| `{env_name(f)}` | ")
        assert row.count("|") == 4, row  # a '|' inside a doc would break the table
        assert f.metadata["doc"] in row
    assert "| `STREAM_APP_EXCLUDE_SEEN` | `true` |" in settings_table()
    assert "| `WEB_PORT` | `6066` |" in settings_table()


def test_every_field_has_a_doc():
    for f in dataclasses.fields(Settings):
        doc = f.metadata.get("doc")
        assert isinstance(doc, str) and doc.strip(), f.name


def test_trainer_settings_reach_the_objective():
    s = Settings.from_env({"STREAM_APP_TRAINER_EPOCHS": "2.5", "STREAM_APP_TRAINER_LR": "0.01",
                           "STREAM_APP_TRAINER_STEP_SIZE": "64",
                           "STREAM_APP_TRAINER_FULL_SOFTMAX_ITEMS": "500",
                           "STREAM_APP_TRAINER_NEGATIVES": "100",
                           "STREAM_APP_TRAINER_SKIP_WEIGHT": "0.5",
                           "STREAM_APP_SEQUENCE_DIM": "32", "STREAM_APP_SEQUENCE_BLOCKS": "3",
                           "STREAM_APP_SEQUENCE_HEADS": "4",
                           "STREAM_APP_SEQUENCE_DROPOUT": "0.1",
                           "STREAM_APP_SEQUENCE_ID_DROPOUT": "0.25",
                           "STREAM_APP_TRAINER_SEED": "3",
                           "STREAM_APP_SEQUENCE_ITEM_IDS": "false",
                           "STREAM_APP_POPULARITY_WEIGHT": "0.25",
                           "STREAM_APP_COVISIT_WEIGHT": "2",
                           "STREAM_APP_RECENT_ITEMS": "4"})
    p = s.sequence_params(seed=7)
    assert s.trainer_epochs == 2.5 and type(s.trainer_epochs) is float
    assert (p.length, p.dim, p.blocks, p.heads, p.dropout) == (4, 32, 3, 4, 0.1)
    assert (p.lr, p.epochs, p.batch_size, p.full_softmax_items, p.negatives, p.skip_weight) \
        == (0.01, 2.5, 64, 500, 100, 0.5)
    assert (p.seed, p.id_dropout, p.use_text, p.use_ids) == (7, 0.25, True, False)
    assert s.sequence_params().seed == 3
    assert s.interest_params().recent_items == 4  # the model reads what users keep
    assert s.defaults() == Defaults(popularity=0.25, covisit=2.0, interest=1.0,
                                    fitted=("sequence",), margin=1.0, sequence=0.0)


def test_the_model_has_one_source_of_defaults():
    """Every field of the model's parameters comes from a setting: SequenceParams and
    Defaults hold no defaults of their own (but the two ablation switches)."""
    s = Settings()
    p = s.sequence_params()
    mirror = {"length": s.recent_items, "dim": s.sequence_dim, "blocks": s.sequence_blocks,
              "heads": s.sequence_heads, "dropout": s.sequence_dropout, "lr": s.trainer_lr,
              "epochs": s.trainer_epochs, "batch_size": s.trainer_step_size,
              "full_softmax_items": s.trainer_full_softmax_items,
              "negatives": s.trainer_negatives, "skip_weight": s.trainer_skip_weight,
              "seed": s.trainer_seed, "id_dropout": s.sequence_id_dropout,
              "use_text": s.sequence_item_text, "use_ids": s.sequence_item_ids}
    assert dataclasses.asdict(p) == mirror
    assert s.recent_items == 50 and s.trainer_epochs == 2.0
    required = [f.name for f in dataclasses.fields(SequenceParams)
                if f.default is dataclasses.MISSING]
    assert set(mirror) - set(required) == {"use_text", "use_ids"}
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Defaults))
    assert dataclasses.asdict(s.defaults()) == {"popularity": s.popularity_weight,
                                                "covisit": s.covisit_weight,
                                                "interest": s.interest_weight,
                                                "fitted": ("sequence",),
                                                "margin": s.trainer_blend_margin,
                                                "sequence": s.sequence_weight}
    assert s.replace(trainer_blend_fit="all").defaults().fitted == BLEND_PARTS
    assert s.replace(trainer_blend_fit="sequence, covisit").defaults().fitted == (
        "sequence", "covisit")
    with pytest.raises(ValueError, match="TRAINER_BLEND_FIT"):
        Settings.from_env({"STREAM_APP_TRAINER_BLEND_FIT": "sequence,colour"})
    assert Settings(recent_items=0).sequence_params().length == 1  # reads at least one


def test_removed_settings_are_gone():
    for name in ("trainer_residual_lr", "trainer_residual_l2", "trainer_temperature",
                 "trainer_sequence_decay"):
        assert name not in FIELDS
    assert not hasattr(Settings(), "fit_params")


def test_negative_blas_threads_rejected():
    with pytest.raises(ValueError, match="STREAM_APP_BLAS_THREADS"):
        Settings.from_env({"STREAM_APP_BLAS_THREADS": "-1"})
