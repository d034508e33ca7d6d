"""Prometheus metrics of one worker process (its own registry, so tests can build many)."""

from __future__ import annotations

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Gauge, Histogram,
                               PlatformCollector, ProcessCollector, generate_latest)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # the standard process_* (CPU, memory, open files) and python_* series
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.records = Counter("stream_app_records_total", "Input records by topic and outcome",
                               ["topic", "outcome"], registry=self.registry)
        self.recommendations = Counter("stream_app_recommendations_total",
                                       "Recommendation events emitted", registry=self.registry)
        self.cas_conflicts = Counter("stream_app_cas_conflicts_total",
                                     "User writes that lost a compare-and-set race",
                                     registry=self.registry)
        self.user_cache_stale = Counter(
            "stream_app_user_cache_stale_total",
            "Users whose state this process kept from its last write had been written by "
            "another (or expired) and were read again", registry=self.registry)
        self.encoded = Counter("stream_app_texts_encoded_total", "Texts run through the model",
                               registry=self.registry)
        self.batch_seconds = Histogram("stream_app_batch_seconds", "Time to process a batch",
                                       ["topic"], registry=self.registry,
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("stream_app_batch_size", "Records per batch", ["topic"],
                                    registry=self.registry,
                                    buckets=(1, 4, 16, 64, 128, 256, 512, 1024))
        self.catalog_items = Gauge("stream_app_catalog_items", "Items in this worker's index",
                                   registry=self.registry)
        self.lag_seconds = Histogram(
            "stream_app_event_to_recommendation_seconds",
            "Kafka record timestamp to recommendation emit, seconds", registry=self.registry,
            buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))

        self.retries = Counter("stream_app_retries_total",
                               "Batches retried after an infrastructure fault, by topic (or "
                               "startup) and cause", ["topic", "cause"], registry=self.registry)
        self.dead_letters = Counter("stream_app_dead_letters_total",
                                    "Records sent to dead letters, by topic and reason",
                                    ["topic", "reason"], registry=self.registry)
        self.rewound = Counter("stream_app_rewound_events_total",
                               "Unseen events from below an offset already applied (topic "
                               "recreated, offsets reset): applied", registry=self.registry)
        self.ready = Gauge("stream_app_ready",
                           "1 when the process is ready (started, joined, not stuck retrying, "
                           "lag moving); what /readyz says, minus its Redis PING",
                           registry=self.registry)
        self.consumer_lag = Gauge("stream_app_consumer_lag",
                                  "Records behind the end of each assigned partition",
                                  ["topic", "partition"], registry=self.registry)
        self.model_swaps = Counter("stream_app_model_swaps_total",
                                   "Model version swaps by outcome (ok, refused)", ["outcome"],
                                   registry=self.registry)
        self.model_info = Gauge("stream_app_model_info", "The model version ranking (value 1)",
                                ["version"], registry=self.registry)
        # the trainer process
        self.trainer_examples = Counter("stream_app_trainer_examples_total",
                                        "Training examples made from feedback and activity",
                                        registry=self.registry)
        self.trainer_pending = Gauge("stream_app_trainer_pending_examples",
                                     "Examples waiting for the next round", registry=self.registry)
        self.trainer_backpressure = Counter(
            "stream_app_trainer_backpressure_total",
            "Times the trainer stopped consuming because trainer_max_pending examples waited",
            registry=self.registry)
        self.trainer_rounds = Counter("stream_app_trainer_rounds_total",
                                      "Training rounds by outcome (promoted, refused, superseded, failed)",
                                      ["outcome"], registry=self.registry)
        self.trainer_round_seconds = Histogram(
            "stream_app_trainer_round_seconds", "Time of a training round (fit and scoring)",
            registry=self.registry, buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.trainer_lag_seconds = Gauge(
            "stream_app_trainer_lag_seconds",
            "How long the records of the trainer's latest batch waited: now minus the oldest "
            "Kafka timestamp in it",
            registry=self.registry)
        self.trainer_memory_bytes = Gauge(
            "stream_app_trainer_memory_bytes",
            "Resident memory of the trainer's processes (trainer: consuming; training: rounds)",
            ["process"], registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
