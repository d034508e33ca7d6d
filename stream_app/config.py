"""Settings: one dataclass, every field with a default, an env var and a doc line.

Env vars are ``STREAM_APP_<FIELD>`` except the three endpoints operators set
everywhere (``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``, ``WEB_PORT``).
``docs/configuration.md`` is generated from this file (``stream-app settings``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from stream_app.ann import AnnParams
from stream_app.connections import KafkaConfig, RedisConfig
from stream_app.contract import Limits
from stream_app.index import ROW_DTYPES
from stream_app.model.interest import InterestParams
from stream_app.model.neighbours import TextLending
from stream_app.model.scoring import BLEND_PARTS, Defaults
from stream_app.model.sequence import SequenceParams

ENV_PREFIX = "STREAM_APP_"


def _setting(default: Any, doc: str, env: str | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "env": env})


@dataclass(frozen=True)
class Settings:
    # --- endpoints -------------------------------------------------------
    kafka_bootstrap_servers: str = _setting(
        "", "Kafka bootstrap servers, comma separated. Empty: `up`/`demo`/`bench` start an "
        "embedded broker; `worker` uses 127.0.0.1:9092.", env="KAFKA_BOOTSTRAP_SERVERS")
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0", "Redis URL. `up`/`demo`/`bench` start an embedded Valkey "
        "when nothing answers here.", env="REDIS_URL")
    redis_cluster: bool = _setting(False, "Connect to `redis_url` as a Redis Cluster.")
    redis_username: str = _setting(
        "", "Redis ACL user (else the one in `redis_url`, else `default`).")
    redis_password: str = _setting(
        "", "Redis password (else the one in `redis_url`); keep it in a secret.")
    redis_ssl_ca_file: str = _setting(
        "", "CA file to verify Redis' certificate with a `rediss://` URL (empty: the "
        "system's CAs).")
    redis_ssl_certfile: str = _setting(
        "", "Client certificate for Redis TLS (when the server requires one).")
    redis_ssl_keyfile: str = _setting("", "Key of `redis_ssl_certfile`.")
    redis_ssl_check_hostname: bool = _setting(
        True, "Check that Redis' certificate names the host in `redis_url`.")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "`PLAINTEXT`, `SSL` (TLS, optionally with a client certificate), "
        "`SASL_PLAINTEXT` or `SASL_SSL` (user and password, over TLS).")
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a `SASL_*` protocol).")
    kafka_sasl_username: str = _setting("", "SASL user name.")
    kafka_sasl_password: str = _setting("", "SASL password; keep it in a secret.")
    kafka_ssl_cafile: str = _setting(
        "", "CA file to verify the brokers' certificates (empty: the system's CAs).")
    kafka_ssl_certfile: str = _setting(
        "", "Client certificate (PEM) for mutual TLS; may hold the key too.")
    kafka_ssl_keyfile: str = _setting("", "Key of `kafka_ssl_certfile` (PEM).")
    kafka_ssl_key_password: str = _setting("", "Password of `kafka_ssl_keyfile`, if any.")
    kafka_ssl_check_hostname: bool = _setting(
        True, "Check that each broker's certificate names the host it was reached at.")
    web_port: int = _setting(6066, "HTTP port of the worker (health, stats, metrics).",
                             env="WEB_PORT")
    web_host: str = _setting(
        "0.0.0.0", "HTTP bind address of the worker (`up` binds 127.0.0.1 unless this is set).")
    api_token: str = _setting(
        "", "When set, every HTTP endpoint but `/healthz`, `/readyz` and `/metrics` needs "
        "`Authorization: Bearer <token>`; keep it in a secret.")
    show_user_text: bool = _setting(
        False, "Quote users' own free text (searches, stated preferences) in reasons and "
        "in `/users/{id}/interests`; off: \"what you wrote\".")
    # --- naming ----------------------------------------------------------
    app_id: str = _setting("stream-app", "Faust app id: the Kafka consumer group of workers.")
    key_prefix: str = _setting("sa", "Prefix of every Redis key this deployment writes.")
    topic_items: str = _setting("items", "Catalog topic (key item_id).")
    topic_activity: str = _setting("user-activity", "User activity topic (key user_id).")
    topic_recommendations: str = _setting("recommendations", "Output topic (key user_id).")
    topic_feedback: str = _setting("feedback", "Feedback topic (key user_id).")
    topic_dead_letters: str = _setting("dead-letters", "Records that failed parsing or validation.")
    topic_partitions: int = _setting(8, "Partitions of topics the app creates (max workers).")
    topic_replication: int = _setting(1, "Replication factor of topics the app creates.")
    kafka_session_timeout_s: float = _setting(
        10.0, "Consumer group session timeout: a dead worker's partitions move after this.")
    kafka_heartbeat_interval_s: float = _setting(3.0, "Consumer group heartbeat interval.")
    kafka_fetch_max_wait_ms: int = _setting(
        20, "Longest a consumer fetch waits for data (brokers that hold fetches, as tansu "
        "does, add up to this much latency; Apache Kafka answers as soon as data arrives).")
    kafka_producer_batch_bytes: int = _setting(
        262144, "Largest producer batch per partition, bytes: a micro-batch's "
        "recommendations for one partition fit one batch, so one produce request confirms "
        "them (Faust's default, 16384, holds ~8 recommendations).")
    kafka_producer_linger_ms: int = _setting(
        0, "How long the producer waits for more records before sending a batch, ms; 0: "
        "at once (a micro-batch is handed over whole, so it is one batch anyway).")
    faust_event_stats: bool = _setting(
        False, "Faust's per-message and per-event statistics (its Monitor sensor), read "
        "only by Faust's own statistics pages; off saves ~13% of the Faust path's cost.")
    # --- model -----------------------------------------------------------
    model_path: str = _setting(
        "", "Local Hugging Face model directory. Empty: the bundled all-MiniLM-L6-v2.")
    max_seq_length: int = _setting(128, "Tokens per text given to the encoder.")
    encode_batch_size: int = _setting(64, "Texts per encoder forward pass.")
    torch_threads: int = _setting(
        0, "torch intra-op threads (ONNX Runtime's with an `onnx` encoder backend); 0 keeps "
        "the library's default.")
    blas_threads: int = _setting(
        1, "Threads of numpy's BLAS in every command's process (worker, trainer, eval, "
        "bench; the training process takes `STREAM_APP_TRAINER_THREADS`); 0 keeps the "
        "library's default (one per core, idle ones spinning): a worker's products are "
        "small, so a second thread mostly burns the core the broker and Redis want.")
    encoder_backend: str = _setting(
        "torch", "Text encoder: `torch`; `onnx`, the same model exported to ONNX Runtime on "
        "first use (cached under `~/.cache/stream-app/onnx`): the same vectors and version, "
        "faster, needs the `onnx` extra; `onnx-int8`, its weights in int8: faster still, "
        "cosine ~0.996 to torch's vectors, so a version of its own (items re-encoded).")
    text_cache_size: int = _setting(10000, "Free-text vectors kept in memory per worker (LRU).")
    # --- interest model --------------------------------------------------
    max_interests: int = _setting(
        4, "Interests kept per user; 0 ranks by popularity only (the trending list).")
    long_half_life_s: float = _setting(
        21 * 86400.0, "Long-term half-life of interests, event-time seconds (`inf`: no decay).")
    short_half_life_s: float = _setting(
        6 * 3600.0, "Short-term (session) half-life of interest strength, seconds.")
    short_term_weight: float = _setting(
        8.0, "Weight of the short-term strength against the long-term one.")
    open_threshold: float = _setting(
        0.6, "Cosine below which an event opens a new interest instead of joining one.")
    recent_items: int = _setting(
        50, "Latest chosen items kept per user: the sequence the trained model reads.")
    interest_weight: float = _setting(
        1.0, "Weight of the cosine of a user's interests with an item's text vector in every "
        "score, in versions that fitted none (0: text does not rank; the ID-only ablation).")
    popularity_weight: float = _setting(
        0.5, "Weight of the prior log(1 + decayed item popularity) in every score.")
    covisit_weight: float = _setting(
        4.0, "Weight of the co-visit score (items chosen together with the user's latest "
        "ones, counted at once) in versions that fitted none (the plain encoder).")
    covisit_history: int = _setting(
        20, "Latest chosen items of a user that a choice is counted together with, and that "
        "the co-visit score reads.")
    covisit_keep: int = _setting(100, "Items per user that get a co-visit score (its best).")
    covisit_recency: float = _setting(
        0.8, "In a user's co-visit score, the item chosen k choices back weighs this ** k "
        "(1: all of the latest `covisit_history` alike).")
    covisit_pair_recency: float = _setting(
        0.9, "A co-visit pair whose items were chosen k + 1 choices apart counts this ** k "
        "(1: every pair within `covisit_history` counts once).")
    covisit_backward: float = _setting(
        1.0, "How much a co-visit pair counts backward (the earlier item for a user whose "
        "latest is the later one) against forward (the later item after the earlier); 1: "
        "order ignored, 0: only what users chose next counts.")
    covisit_target_exponent: float = _setting(
        0.8, "Co-visit similarity c[i, j] / (n[i] ** (1 - a) * n[j] ** a): `a`, how much the "
        "suggested item's own count divides it (0.5: cosine; higher brings less popular "
        "items forward, the popularity prior ranks popularity apart).")
    covisit_count_prior: float = _setting(
        1.0, "Choices every item's count starts with in the co-visit similarity's divisor "
        "(c[i, j] / ((n[i] + this) ** (1 - a) * (n[j] + this) ** a)): pairs of rarely "
        "chosen items, whose similarity is noise, count less (0: none).")
    covisit_half_life_s: float = _setting(
        365 * 86400.0, "Half-life of co-visit counts, event-time seconds: a pair chosen "
        "this long before another counts half as much (`inf`: never fade).")
    covisit_text_weight: float = _setting(
        1.0, "How much of its text neighbours' co-visit scores a never-chosen item borrows "
        "(one chosen n times: this * `covisit_text_shrink` / (`covisit_text_shrink` + n)): "
        "a new item gets a co-visit score from the items it reads like (0: off).")
    covisit_text_neighbours: int = _setting(
        10, "Nearest items by text vector an item borrows co-visit scores from.")
    covisit_text_shrink: float = _setting(
        5.0, "Choices after which an item borrows half as much of its text neighbours' "
        "co-visit scores as a new one.")
    covisit_text_max_items: int = _setting(
        20000, "Largest catalog whose items borrow text neighbours' co-visit scores (the "
        "neighbour table costs catalog² products at start; larger catalogs rank without).")
    covisit_log_max: int = _setting(
        100000, "Co-visit log entries (one per micro-batch) kept in Redis for workers that "
        "start later; a new worker counts what the log still holds.")
    popularity_half_life_s: float = _setting(
        60 * 86400.0, "Half-life of item popularity, event-time seconds.")
    popularity_refresh_s: float = _setting(
        1.0, "How often a worker applies the popularity values and the co-visits other "
        "workers logged.")
    popularity_reload_s: float = _setting(
        600.0, "How often a worker also reads the whole popularity hash (HSCAN) instead of "
        "only the log of its changes: picks up what workers of an older release counted "
        "(they log nothing); 0: only at start and when the log was trimmed past it.")
    popularity_log_max: int = _setting(
        10000, "Popularity log entries (one per micro-batch, its items' new values) kept "
        "in Redis; a worker that falls further behind reads the whole hash again.")
    shared_key_shards: int = _setting(
        1, "Keys the deployment-wide counts are spread over: the popularity hash (with "
        "its log) by item and the co-visit log by writing worker, each shard a key of its "
        "own, so a Redis Cluster puts them on different nodes. 1 on a single Redis; about "
        "the cluster's primaries beyond ~10^4 events/s. Changing it restarts the counts "
        "of the items that move to another shard (docs/scaling.md).")
    weight_view: float = _setting(0.5, "Weight of a `view` event.")
    weight_click: float = _setting(1.0, "Weight of a `click` event.")
    weight_like: float = _setting(2.0, "Weight of a `like` event.")
    weight_purchase: float = _setting(3.0, "Weight of a `purchase` event.")
    weight_rate: float = _setting(
        0.5, "Weight per rating point above `rating_neutral` (below it pulls away).")
    rating_neutral: float = _setting(3.0, "Rating that neither attracts nor repels.")
    weight_search: float = _setting(1.0, "Weight of a `search` event (its text).")
    weight_text: float = _setting(1.5, "Weight of a `text` event (stated preference).")
    weight_dislike: float = _setting(-1.5, "Weight of a `dislike` event (negative pulls away).")
    weight_skip: float = _setting(-0.3, "Weight of a `skip` event.")
    # --- ranking ---------------------------------------------------------
    top_k: int = _setting(10, "Items per recommendation event.")
    max_k: int = _setting(100, "Largest k the HTTP API accepts.")
    exclude_seen: bool = _setting(True, "Leave out items the user already interacted with.")
    seen_max: int = _setting(5000, "Most recent interacted items remembered per user.")
    state_format: int = _setting(
        2, "User state encoding written (every one is read): 2, float16 interest vectors "
        "and compressed metadata; 1, the float32 and JSON of earlier releases, which they "
        "can read: set 1 while rolling out from such a release, then 2.")
    # --- large catalogs (stream_app/ann.py) ------------------------------
    ann_min_items: int = _setting(
        50000, "Catalogs with at least this many items are ranked through an approximate "
        "nearest-neighbour index (candidates, then exact re-scoring) and their vectors kept "
        "compact (`ann_rows`); smaller ones by brute force over every item.")
    ann_candidates: int = _setting(
        100, "Candidates the index gives per interest direction and per sequence query "
        "(and per event from the popular pool), all re-scored exactly.")
    ann_popular_pool: int = _setting(
        1000, "Most popular items scored against every event's interests for candidates "
        "(a popular item far from every interest can still make a list).")
    ann_dtype: str = _setting(
        "i8", "The text index's copy of the vectors: `b1` (sign bits, Hamming distance), "
        "`i8`, `f16` or `f32` (a model version's index: `f16` for `b1`); re-scoring reads "
        "the catalog's own vectors (`ann_rows`).")
    ann_rows: str = _setting(
        "f16", "The text vectors a large catalog keeps and re-scores candidates with: "
        "`f16` (float16) or `i8` (int8 and a scale per row: half of f16's memory; at 10^6 "
        "items the same recall@10 in bench runs, the order within a list less often exact).")
    ann_connectivity: int = _setting(
        16, "HNSW edges per node (M) of the index (at 10^6 items 32 reach regions 16 miss, "
        "for ~1/3 more graph memory with int8 vectors: docs/scaling.md).")
    ann_expansion_add: int = _setting(
        128, "HNSW search width while building the index (efConstruction).")
    ann_expansion_search: int = _setting(
        192, "HNSW search width per query (ef; at least `ann_candidates`): at 10^6 items "
        "served lists reached recall@10 0.957-0.996 against exact ranking in five bench "
        "runs (one run at 128: 0.973, ~10 % more events/s); `stream-app bench --graph` "
        "measures a width before you set it.")
    ann_rebuild_fraction: float = _setting(
        0.05, "Share of the catalog changed since the index was built (searched exactly "
        "meanwhile) at which a new index is built in a thread and swapped in.")
    ann_threads: int = _setting(
        0, "Threads that build and search the index; 0: every core.")
    # --- streaming -------------------------------------------------------
    batch_size: int = _setting(256, "Most events per micro-batch.")
    batch_within_s: float = _setting(
        0.0, "Longest wait to fill a micro-batch, seconds. 0: no wait; a batch is what is "
        "ready when the one before is done (one event on a quiet stream, more as the load "
        "grows, up to `batch_size`). Above 0: Faust's `take_events`, which waits this long "
        "for `batch_size` events, adding to every event's latency (docs/scaling.md).")
    dedupe_window: int = _setting(256, "Recent event ids remembered per user to drop duplicates.")
    max_text_chars: int = _setting(2000, "Longer free text is rejected to dead-letters.")
    max_record_bytes: int = _setting(1_000_000, "Larger records are rejected to dead-letters.")
    max_id_chars: int = _setting(
        256, "Longer user, item, event or recommendation ids are rejected to dead-letters.")
    max_tags: int = _setting(64, "An item with more tags is rejected to dead-letters.")
    max_tag_chars: int = _setting(128, "An item with a longer tag is rejected to dead-letters.")
    max_feedback_items: int = _setting(
        100, "Items one `feedback` record may name in `item_ids` (one action on several items "
        "shown together); more: dead-lettered.")
    rating_min: float = _setting(
        -10.0, "Lowest rating accepted; below it the record goes to dead-letters.")
    rating_max: float = _setting(
        10.0, "Highest rating accepted; above it the record goes to dead-letters.")
    max_json_depth: int = _setting(
        32, "Records whose JSON arrays/objects nest deeper are rejected to dead-letters.")
    max_future_skew_s: float = _setting(
        3600.0, "A `ts` more than this many seconds ahead of the record's broker timestamp "
        "is rejected to dead-letters (it would freeze the user's decay and the item's "
        "popularity; often milliseconds sent as seconds).")
    worker_feedback: bool = _setting(
        False, "Workers also read the feedback topic, only to dead-letter bad records (for a "
        "deployment without a trainer). Off: the trainer, which learns from feedback, "
        "dead-letters them, and workers fetch none of it (feedback can be several records "
        "per recommendation).")
    dead_letter_payload_bytes: int = _setting(
        4096, "Bytes of a rejected record's value copied into its dead letter (with the "
        "full size and sha256), so a dead letter always fits the producer's size limit.")
    retry_base_s: float = _setting(
        0.1, "First backoff of a batch retried after an infrastructure fault (Redis, Kafka, "
        "the model); doubles per attempt, jittered.")
    retry_max_s: float = _setting(10.0, "Longest backoff between retries of one batch.")
    ready_retry_s: float = _setting(
        30.0, "`/readyz` answers 503 once a batch has been retrying for this long (the "
        "worker is alive but stuck on Redis or Kafka).")
    ready_stall_s: float = _setting(
        120.0, "`/readyz` answers 503 when consumer lag has been above zero this long "
        "without any batch finishing.")
    lag_interval_s: float = _setting(
        5.0, "How often a process measures its consumer lag (metrics, `/readyz`), seconds.")
    user_ttl_s: float = _setting(
        180 * 86400.0, "A user's state and seen items (and the trainer's copy) expire this "
        "many seconds after the user's last event was applied (wall clock); 0 keeps them.")
    user_cache_mb: float = _setting(
        64.0, "Memory (MB, estimated) for the users' state a worker, and the trainer, keep "
        "from their last read or write, so a user's next batch skips reading it back from "
        "Redis; the least recently used go first. The write that follows checks the copy "
        "is current (version and writer) and reads the user again when not. A user takes "
        "about 5 KB plus 110 bytes per seen item; 0: read every batch's users.")
    user_history: int = _setting(
        50, "Snapshots kept per user for the console's timeline (`P:{u:<user>}:history`: "
        "after each applied event, its interests' strengths and the list it got); expire "
        "and are forgotten with the user's state; 0: none kept.")
    forget_tombstone_s: float = _setting(
        86400.0, "After a `forget`, how long the user's latest event ids (nothing else) are "
        "kept so a redelivered batch is not applied again, seconds.")
    catalog_sync_interval_s: float = _setting(
        0.25, "How often a worker pulls catalog changes from Redis, seconds.")
    # --- fine-tuning and rollout -----------------------------------------
    topic_model_updates: str = _setting(
        "model-updates", "Topic announcing every trained, promoted or rolled-back version.")
    trainer_batch_size: int = _setting(
        2000, "Examples (a user's choice and the interests before it) per training round.")
    trainer_max_wait_s: float = _setting(
        60.0, "Longest a round waits for its batch to fill, wall-clock seconds.")
    trainer_holdout_fraction: float = _setting(
        0.2, "Newest share of a round's examples held out to score candidate vs current.")
    trainer_max_pending: int = _setting(
        10000, "Examples that may wait for a round; at this many the trainer stops consuming "
        "until a round takes them (back-pressure; 0: no limit).")
    trainer_buffer_size: int = _setting(
        20000, "Earlier examples replayed in every round (oldest dropped first).")
    trainer_epochs: float = _setting(
        2.0, "Passes per round over the buffered choice sequences (recent data is replayed "
        "in every round).")
    trainer_lr: float = _setting(1e-3, "Learning rate (Adam) of the sequence model.")
    trainer_step_size: int = _setting(
        128, "Windows of users' choice sequences per training step.")
    trainer_skip_weight: float = _setting(
        0.2, "How much a skip or dislike counts as a hard negative of the next choice (0-1].")
    trainer_full_softmax_items: int = _setting(
        5000, "Catalogs up to this size train with a softmax over every item; larger ones "
        "with a sampled softmax (log-Q corrected).")
    trainer_negatives: int = _setting(
        1024, "Negatives drawn per training step in the sampled softmax (half uniformly, "
        "half by how often items are targets in the round; log-Q corrected).")
    sequence_dim: int = _setting(64, "Width of the sequence model (item and query vectors).")
    sequence_blocks: int = _setting(2, "Causal self-attention blocks of the sequence model.")
    sequence_heads: int = _setting(1, "Attention heads per block (must divide the width).")
    sequence_dropout: float = _setting(0.2, "Dropout of the sequence model while training.")
    trainer_seed: int = _setting(
        0, "Seed of the sequence model's first weights, its training batches, negatives and "
        "ID dropout (the same for every round: a round is reproducible from its data).")
    sequence_id_dropout: float = _setting(
        0.0, "Share of items whose ID embedding is left out at each training step, so the "
        "model also learns to score items from their text alone (as it must for new "
        "items); 0: never (docs/evaluation.md: 0.5 measured no better on ml-latest-small).")
    sequence_item_text: bool = _setting(
        True, "Items enter the sequence model through their projected text vector (new "
        "items are scored from it); off: ID embeddings only (an ablation).")
    sequence_item_ids: bool = _setting(
        True, "Items also get a learned ID embedding, zero until a round trains on them; "
        "off: text only (an ablation).")
    trainer_blend_fit: str = _setting(
        "sequence", "Which weights of a version's score the trainer fits on held-out choices "
        "(comma-separated among sequence, interest, covisit, popularity, or `all`); the "
        "others keep the settings' values. Fitting all of them on a round's few hundred "
        "held-out choices chased their noise on sparse data (docs/evaluation.md).")
    sequence_weight: float = _setting(
        0.0, "The sequence model's weight in a trained version's score before the trainer "
        "fits it on held-out choices (0: a version serves as the plain model unless its "
        "sequence model clearly ranks better).")
    trainer_blend_margin: float = _setting(
        1.0, "Standard errors (of the paired per-choice difference on held-out choices) by "
        "which a fitted weight's move must rank better to be taken; higher keeps the "
        "settings' weights (`STREAM_APP_SEQUENCE_WEIGHT` for the sequence model's) unless "
        "the evidence is clearer.")
    trainer_promotion_tolerance: float = _setting(
        0.1, "A candidate is promoted unless its held-out NDCG@10 is below the plain "
        "encoder's, or below the current version's by more than this share.")
    trainer_revert_windows: int = _setting(
        2, "Held-out windows a fine-tuned current version must have been judged on, since "
        "its promotion, before the trainer may revert to the plain encoder (when the "
        "encoder ranks them better, pooled).")
    trainer_batch_within_s: float = _setting(
        0.05, "Longest wait to fill one of the trainer's micro-batches of the stream, seconds "
        "(`STREAM_APP_BATCH_WITHIN_S` for the trainer, which no one waits on: fewer, larger "
        "batches leave more CPU to the workers).")
    trainer_threads: int = _setting(
        1, "torch threads of the training process; 1 makes a round reproducible (threaded "
        "CPU sums are not) and leaves the other cores to the stream.")
    trainer_nice: int = _setting(
        10, "How much lower the trainer's CPU priority is than a worker's, and its training "
        "process's lower again (Unix nice increment, capped at the lowest; 0 keeps both): "
        "the trainer consumes and trains with the CPU the workers leave. Above 0 the "
        "training process also runs in Linux's idle scheduling class (`SCHED_IDLE`): a "
        "worker that wakes takes its core at once.")
    model_poll_interval_s: float = _setting(
        2.0, "How often a worker checks which model version is current, seconds.")
    model_keep_versions: int = _setting(
        20, "Versions kept in Redis (the current one is never deleted).")
    # --- operations ------------------------------------------------------
    log_level: str = _setting("info", "Log level: debug, info, warn, error.")
    data_dir: str = _setting("", "Faust data dir; empty: a temporary directory.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every field from its env var; explicit overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_name(f)
            if name in environ:
                values[f.name] = _coerce(f, environ[name])
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values that would silently misbehave."""
        positive = ("long_half_life_s", "short_half_life_s", "popularity_half_life_s",
                    "covisit_half_life_s",
                    "popularity_refresh_s", "top_k", "max_k", "batch_size", "dedupe_window", "seen_max",
                    "max_text_chars", "max_record_bytes", "max_id_chars", "max_tags",
                    "max_tag_chars", "max_json_depth", "max_future_skew_s", "max_feedback_items",
                    "encode_batch_size", "max_seq_length",
                    "topic_partitions", "topic_replication", "catalog_sync_interval_s",
                    "text_cache_size", "kafka_session_timeout_s",
                    "kafka_heartbeat_interval_s", "kafka_fetch_max_wait_ms",
                    "kafka_producer_batch_bytes",
                    "trainer_batch_size", "trainer_max_wait_s", "trainer_epochs", "trainer_lr",
                    "trainer_negatives", "trainer_step_size", "trainer_full_softmax_items",
                    "trainer_skip_weight", "trainer_threads", "trainer_revert_windows",
                    "sequence_dim", "sequence_blocks", "sequence_heads", "covisit_keep",
                    "covisit_text_neighbours", "covisit_text_shrink",
                    "covisit_log_max", "popularity_log_max", "shared_key_shards",
                    "model_poll_interval_s", "model_keep_versions",
                    "ann_min_items", "ann_candidates", "ann_connectivity",
                    "ann_expansion_add", "ann_expansion_search", "ann_rebuild_fraction")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{env_name(_field(name))} must be > 0, got {getattr(self, name)}")
        for name in ("max_interests", "short_term_weight", "popularity_weight", "interest_weight",
                     "trainer_blend_margin", "sequence_weight",
                     "kafka_producer_linger_ms", "batch_within_s", "trainer_batch_within_s",
                     "trainer_buffer_size", "sequence_dropout", "recent_items",
                     "covisit_weight", "covisit_history", "trainer_nice", "trainer_seed",
                     "covisit_text_weight", "covisit_text_max_items", "covisit_count_prior",
                     "trainer_promotion_tolerance", "user_history", "user_cache_mb",
                     "popularity_reload_s",
                     "ann_popular_pool",
                     "ann_threads", "blas_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{env_name(_field(name))} must be >= 0")
        self.kafka()  # the security settings fit together (ValueError naming them)
        if not self.rating_min < self.rating_max:
            raise ValueError(f"{env_name(_field('rating_min'))} must be below "
                             f"{env_name(_field('rating_max'))}")
        if self.trainer_skip_weight > 1:
            raise ValueError(f"{env_name(_field('trainer_skip_weight'))} must be in (0, 1]")
        for name in ("sequence_dropout", "sequence_id_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{env_name(_field(name))} must be in [0, 1)")
        if not (self.sequence_item_text or self.sequence_item_ids):
            raise ValueError(f"{env_name(_field('sequence_item_text'))} and "
                             f"{env_name(_field('sequence_item_ids'))} cannot both be off")
        if self.sequence_dim % self.sequence_heads:
            raise ValueError(f"{env_name(_field('sequence_heads'))} must divide "
                             f"{env_name(_field('sequence_dim'))}")
        if self.ann_dtype not in ("b1", "i8", "f16", "f32"):
            raise ValueError(f"{env_name(_field('ann_dtype'))} must be b1, i8, f16 or f32")
        if self.ann_rows not in ROW_DTYPES:
            raise ValueError(f"{env_name(_field('ann_rows'))} must be "
                             f"{' or '.join(ROW_DTYPES)}")
        if self.ann_rebuild_fraction > 1:
            raise ValueError(f"{env_name(_field('ann_rebuild_fraction'))} must be in (0, 1]")
        if self.encoder_backend not in ("torch", "onnx", "onnx-int8"):
            raise ValueError(f"{env_name(_field('encoder_backend'))} must be torch, onnx or "
                             f"onnx-int8, not {self.encoder_backend!r}")
        if self.state_format not in (1, 2):
            raise ValueError(f"{env_name(_field('state_format'))} must be 1 or 2")
        for name in ("covisit_recency", "covisit_pair_recency"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{env_name(_field(name))} must be in (0, 1]")
        for name in ("covisit_backward", "covisit_target_exponent"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{env_name(_field(name))} must be in [0, 1]")
        if not 0 < self.trainer_holdout_fraction < 1:
            raise ValueError(f"{env_name(_field('trainer_holdout_fraction'))} must be in (0, 1)")
        if not set(self.blend_fit()) <= set(BLEND_PARTS):
            raise ValueError(f"{env_name(_field('trainer_blend_fit'))} must name weights among "
                             f"{', '.join(BLEND_PARTS)} (or be `all`), not "
                             f"{self.trainer_blend_fit!r}")

    def interest_params(self) -> InterestParams:
        return InterestParams(self.max_interests, self.long_half_life_s, self.short_half_life_s,
                              self.short_term_weight, self.open_threshold, self.dedupe_window,
                              self.recent_items)

    def __repr__(self) -> str:  # a password never reaches a log line
        shown = (f"{f.name}={'***' if 'password' in f.name and getattr(self, f.name) else repr(getattr(self, f.name))}"
                 for f in dataclasses.fields(self))
        return f"Settings({', '.join(shown)})"

    def kafka(self) -> KafkaConfig:
        """How every Kafka client of this deployment connects."""
        return KafkaConfig(self.kafka_bootstrap_servers, self.kafka_security_protocol,
                           self.kafka_sasl_mechanism, self.kafka_sasl_username,
                           self.kafka_sasl_password, self.kafka_ssl_cafile,
                           self.kafka_ssl_certfile, self.kafka_ssl_keyfile,
                           self.kafka_ssl_key_password, self.kafka_ssl_check_hostname)

    def redis(self) -> RedisConfig:
        """How every Redis client of this deployment connects."""
        return RedisConfig(self.redis_url, self.redis_cluster, self.redis_username,
                           self.redis_password, self.redis_ssl_ca_file,
                           self.redis_ssl_certfile, self.redis_ssl_keyfile,
                           self.redis_ssl_check_hostname)

    def limits(self) -> Limits:
        """What an input record may hold (``contract.parse_*``)."""
        return Limits(self.max_record_bytes, self.max_text_chars, self.max_id_chars,
                      self.max_tags, self.max_tag_chars, self.rating_min, self.rating_max,
                      self.max_json_depth, self.max_future_skew_s, self.max_feedback_items)

    def text_lending(self) -> TextLending:
        """How items borrow their text neighbours' co-visit scores (``model.neighbours``)."""
        return TextLending(self.covisit_text_weight, self.covisit_text_neighbours,
                           self.covisit_text_shrink, self.covisit_text_max_items)

    def ann_params(self) -> AnnParams:
        """How a large catalog is searched (``ann``)."""
        return AnnParams(self.ann_min_items, self.ann_candidates, self.ann_dtype,
                         self.ann_connectivity, self.ann_expansion_add,
                         max(self.ann_expansion_search, self.ann_candidates),
                         self.ann_rebuild_fraction, self.ann_threads, self.ann_popular_pool,
                         self.ann_rows)

    def blend_fit(self) -> tuple[str, ...]:
        """The weights named by ``trainer_blend_fit`` (`all`: every one)."""
        names = tuple(n.strip() for n in self.trainer_blend_fit.split(",") if n.strip())
        return BLEND_PARTS if names == ("all",) else names

    def defaults(self) -> Defaults:
        """The weights of a score's parts for versions that fitted none, and which of a
        version's weights the trainer fits."""
        return Defaults(self.popularity_weight, self.covisit_weight, self.interest_weight,
                        self.blend_fit(), self.trainer_blend_margin, self.sequence_weight)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def topics(self) -> list[str]:
        return [self.topic_items, self.topic_activity, self.topic_feedback,
                self.topic_recommendations, self.topic_dead_letters, self.topic_model_updates]

    def sequence_params(self, seed: int | None = None) -> SequenceParams:
        return SequenceParams(
            length=max(1, self.recent_items), dim=self.sequence_dim,
            blocks=self.sequence_blocks, heads=self.sequence_heads,
            dropout=self.sequence_dropout, lr=self.trainer_lr, epochs=self.trainer_epochs,
            batch_size=self.trainer_step_size, full_softmax_items=self.trainer_full_softmax_items,
            negatives=self.trainer_negatives, skip_weight=self.trainer_skip_weight,
            seed=self.trainer_seed if seed is None else seed,
            use_text=self.sequence_item_text, use_ids=self.sequence_item_ids,
            id_dropout=self.sequence_id_dropout)

    def event_weights(self) -> dict[str, float]:
        """Weights by activity type; `rate` is scaled by the rating at apply time."""
        return {
            "view": self.weight_view, "click": self.weight_click, "like": self.weight_like,
            "purchase": self.weight_purchase, "rate": self.weight_rate,
            "search": self.weight_search, "text": self.weight_text,
            "dislike": self.weight_dislike, "skip": self.weight_skip,
        }

    def env(self) -> dict[str, str]:
        """These settings as env vars, to hand to a child process."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[env_name(f)] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(Settings) if f.name == name)


def env_name(f: dataclasses.Field) -> str:
    return f.metadata.get("env") or ENV_PREFIX + f.name.upper()


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    kind = type(f.default)
    if kind is bool:
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{env_name(f)}: not a boolean: {raw!r}")
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{env_name(f)}: {exc}") from None


def settings_table() -> str:
    """Markdown table of every setting (the configuration doc)."""
    rows = ["| env var | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        rows.append(f"| `{env_name(f)}` | `{shown}` | {f.metadata['doc']} |")
    return "\n".join(rows)
