"""Key names are a contract with every deployment's data: a renamed key orphans what is
stored under the old name. These are the names releases have written (unit tier)."""

from __future__ import annotations

from stream_app.redis_keys import Keys, beside, log_of, shard_of, sharded


def test_the_names_releases_have_written():
    keys, trainer = Keys("sa"), Keys("sa", ":trainer")
    assert keys.state("u1") == "sa:{u:u1}:state"
    assert keys.seen("u1") == "sa:{u:u1}:seen"
    assert keys.history("u1") == "sa:{u:u1}:history"
    assert trainer.state("u1") == "sa:trainer:{u:u1}:state"
    assert keys.popularity() == "sa:popularity" and keys.popularity(3) == "sa:popularity:3"
    assert trainer.popularity() == "sa:trainer:popularity"
    assert keys.popularity(scope=":trainer") == "sa:trainer:popularity"
    assert keys.covisit_log() == "sa:covisit:log" and keys.covisit_log(2) == "sa:covisit:log:2"
    assert keys.item_vectors("m1") == "sa:items:vec:m1"
    assert (keys.item_meta, keys.item_log) == ("sa:items:meta", "sa:items:log")
    assert keys.text_vectors("m1") == "sa:textvec:m1"
    assert keys.encoder_patterns() == ("sa:items:vec:*", "sa:textvec:*")
    assert (keys.stats, keys.models, keys.everything) == ("sa:stats", "sa:{models}:", "sa:*")
    assert keys.ann("w1") == "sa:ann:w1"


def test_a_keys_companions_share_its_cluster_slot():
    assert log_of("sa:popularity") == "sa:popularity:log{sa:popularity}"
    assert Keys.once("sa:covisit:log", "w") == "sa:covisit:log:once:w{sa:covisit:log}"
    assert beside("sa:{u:1}:x", "log") == "sa:{u:1}:x:log"  # its own hash tag is kept
    assert sharded("k", 0) == "k" and sharded("k", 2) == "k:2"
    assert shard_of("anything", 1) == 0
    assert shard_of("i42", 4) == 3418000330 % 4  # crc32: the same in every release
