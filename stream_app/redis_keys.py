"""Every Redis key the app uses, named in one place (``Keys``).

Prefix P (``STREAM_APP_KEY_PREFIX``), one hash tag per user so a user's keys share a
cluster slot; S is the state scope: empty for workers, ":trainer" for the trainer's own
replica of user state and popularity.
  PS:{u:<user>}:state  hash meta (the state, format 2: ``store``), vec (empty), ver (CAS token),
                       by (the token of the write that made ver)
  PS:{u:<user>}:seen   zset item_id -> last interaction ts, whole seconds (trimmed to seen_max)
  PS:{u:<user>}:history list of snapshots, oldest first, one per applied event (workers
                       only, trimmed to user_history): event ts/id/type/item, each interest's
                       strength and what shaped it, the top-k ids and scores it got
  P:items:meta         hash item_id -> JSON {title, tags, ts}
  P:items:vec:<model>  hash item_id -> float32 bytes, one hash per model version
  P:items:log          stream of catalog changes {id, op}; workers tail it
  P:textvec:<model>    hash sha1(text) -> float32 bytes (item text cache)
  PS:popularity        hash item_id -> "count,ts": decayed interaction count
  PS:popularity:log{PS:popularity}
                       stream of the values the hash took {"": previous entry id,
                       item_id: "count,ts" or "" (removed)}; workers follow it (trimmed to
                       popularity_log_max; the hash tag keeps it in the hash's cluster slot)
  PS:covisit:log       stream of co-visit increments {by: worker, c: JSON [[chosen,
                       earlier...]], t: JSON [[ts, [seconds each earlier one was chosen
                       before ts...]]] (row by row; older releases wrote no t)}
  With shared_key_shards = N > 1 both are spread over N keys, each in a cluster slot of its
  own: shard 0 keeps the names above, shard k > 0 appends ":k" (PS:popularity:3 and
  PS:popularity:3:log{PS:popularity:3}, PS:covisit:log:3). An item's count lives in shard
  crc32(item_id) % N; a worker logs its co-visits to shard crc32(its source id) % N.
  <key>:once:<writer>{<key>}  (``<key>:once:<writer>`` when the key has a hash tag) the
                       token of a writer's (a ``Store``'s) last call on a popularity shard
                       or co-visit log shard, expiring after ONCE_TTL_S: that call sent
                       again (a retry after a lost reply) is not made twice
  P:stats              hash of deployment-wide counters
  P:{models}:blob:<version>, P:{models}:meta, :current, :history, :seq
                       model versions (``versions.Registry``), one slot
  P:ann:<worker>       a worker's nearest-neighbour graphs, described (JSON, 60 s)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The key names of one deployment (``prefix``) and state scope (``scope``)."""

    prefix: str
    scope: str = ""

    @property
    def scoped(self) -> str:
        return self.prefix + self.scope

    # users
    def state(self, user_id: str) -> str:
        return f"{self.scoped}:{{u:{user_id}}}:state"

    def seen(self, user_id: str) -> str:
        return f"{self.scoped}:{{u:{user_id}}}:seen"

    def history(self, user_id: str) -> str:
        return f"{self.scoped}:{{u:{user_id}}}:history"

    # shared counts
    def popularity(self, shard: int = 0, scope: str | None = None) -> str:
        """A shard of the popularity hash of ``scope`` (default: ours)."""
        return sharded(f"{self.prefix}{self.scope if scope is None else scope}:popularity",
                       shard)

    def covisit_log(self, shard: int = 0) -> str:
        return sharded(f"{self.scoped}:covisit:log", shard)

    @staticmethod
    def once(key: str, writer: str) -> str:
        """The token of ``writer``'s last call on ``key``, in its slot."""
        return beside(key, f"once:{writer}")

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    # the catalog
    def item_vectors(self, model_version: str) -> str:
        return f"{self.prefix}:items:vec:{model_version}"

    @property
    def item_meta(self) -> str:
        return f"{self.prefix}:items:meta"

    @property
    def item_log(self) -> str:
        return f"{self.prefix}:items:log"

    def text_vectors(self, model_version: str) -> str:
        return f"{self.prefix}:textvec:{model_version}"

    def encoder_patterns(self) -> tuple[str, str]:
        """Every model version's item and text vectors."""
        return f"{self.prefix}:items:vec:*", f"{self.prefix}:textvec:*"

    # model versions, workers
    @property
    def models(self) -> str:
        """The registry's keys start with this (one hash tag: one cluster slot)."""
        return f"{self.prefix}:{{models}}:"

    def ann(self, worker: str) -> str:
        return f"{self.prefix}:ann:{worker}"

    @property
    def everything(self) -> str:
        """A SCAN pattern of every key of the deployment."""
        return f"{self.prefix}:*"


def log_of(key: str) -> str:
    """``key``:log in ``key``'s cluster slot (one script writes both)."""
    return beside(key, "log")


def beside(key: str, suffix: str) -> str:
    """``key``:``suffix`` in ``key``'s cluster slot (not possible for a key with braces
    that make no hash tag: a key prefix with a lone brace)."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if start >= 0 and end > start + 1:  # key has a hash tag of its own: it is kept
        return f"{key}:{suffix}"
    return f"{key}:{suffix}{{{key}}}"


def shard_of(key: str, shards: int) -> int:
    """The shard (0 .. shards - 1) of an item id or a writer's source id: crc32, the same
    in every process and release."""
    return zlib.crc32(key.encode()) % shards if shards > 1 else 0


def sharded(key: str, shard: int) -> str:
    return key if shard == 0 else f"{key}:{shard}"
