"""Redis: user interest state (compare-and-set), seen items, the item catalog.

Key layout (prefix P, one hash tag per user so a user's keys share a cluster slot;
S is the state scope: empty for workers, ":trainer" for the trainer's own replica):
  PS:{u:<user>}:state  hash vec (interest vectors, float32), meta (JSON), ver (CAS token)
  PS:{u:<user>}:seen   zset item_id -> last interaction ts (trimmed to seen_max)
  P:{u:<user>}:history list of JSON snapshots, oldest first, one per applied event (workers
                       only, trimmed to user_history): event ts/id/type/item, each interest's
                       strength and what shaped it, the top-k ids and scores it got
  P:items:meta         hash item_id -> JSON {title, tags, ts}
  P:items:vec:<model>  hash item_id -> float32 bytes, one hash per model version
  P:items:log          stream of catalog changes {id, op}; workers tail it
  P:textvec:<model>    hash sha1(text) -> float32 bytes (item text cache)
  PS:popularity        hash item_id -> "count,ts": decayed interaction count
  PS:covisit:log       stream of co-visit increments {by: worker, c: JSON [[chosen, earlier...]]}
  P:stats              hash of deployment-wide counters

A user's keys expire ``user_ttl_s`` after their last write. A ``forget`` event empties
them (in each scope as it gets there): the seen set and the history go, the state keeps only
the latest event ids (to recognise a redelivery) and expires after ``forget_tombstone_s``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from stream_app.connections import RedisConfig, redis_config
from stream_app.model.interest import Interest, UserState

ITEM_LOG_MAXLEN = 1_000_000
TRAINER_SCOPE = ":trainer"  # the trainer's own replica of user state and popularity
SCOPES = ("", TRAINER_SCOPE)
MODEL_HISTORY_MAX = 1000  # promotions remembered (versions.Registry)

# KEYS: state, seen, history. ARGV: expected ver, vec, meta, seen_max, reset (1: the seen
# set and the history start over), ttl (s, 0: none), then score/member pairs.
_CAS_SCRIPT = """
local cur = redis.call('HGET', KEYS[1], 'ver')
if (cur or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'vec', ARGV[2], 'meta', ARGV[3], 'ver', tostring(tonumber(ARGV[1]) + 1))
if ARGV[5] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
if #ARGV > 6 then
  redis.call('ZADD', KEYS[2], 'GT', unpack(ARGV, 7))
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
end
return 1
"""


# KEYS: history. ARGV: keep, ttl (s, 0: none), then the entries, oldest first.
_HISTORY_SCRIPT = """
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return 1
"""


# KEYS: popularity hash. ARGV: half-life (s, or 'inf'), then item/weight/ts triples.
# Each value is "count,ts": the decayed count as of ts (see model/popularity.py).
_POPULARITY_SCRIPT = """
local hl = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local item, w, t = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local cur = redis.call('HGET', KEYS[1], item)
  local v, ts = 0, t
  if cur then
    local sep = string.find(cur, ',', 1, true)
    v, ts = tonumber(string.sub(cur, 1, sep - 1)), tonumber(string.sub(cur, sep + 1))
  end
  if t >= ts then
    if hl ~= math.huge then v = v * 2 ^ (-(t - ts) / hl) end
    v, ts = v + w, t
  else
    if hl ~= math.huge then w = w * 2 ^ (-(ts - t) / hl) end
    v = v + w
  end
  redis.call('HSET', KEYS[1], item, string.format('%.17g,%.17g', v, ts))
end
return 1
"""


@dataclass(frozen=True)
class UserRecord:
    """A user's state as read, with the CAS token to write it back."""

    state: UserState
    version: int
    seen: frozenset[str]


@dataclass(frozen=True)
class UserWrite:
    user_id: str
    expected_version: int
    state: UserState
    seen: Sequence[tuple[str, float]]  # (item_id, ts) interacted with in this batch
    popular: Sequence[tuple[str, float, float]] = ()  # (item_id, weight, ts) for popularity
    reset: bool = False  # forgotten in this batch: the seen set starts over
    ttl_s: float = 0.0  # both keys expire this long after the write (0: never)


def connect(redis: str | RedisConfig, cluster: bool = False) -> Any:
    """An asyncio client (a bare URL: no further credentials or TLS options); create it
    inside the running loop."""
    config = redis_config(redis)
    return (config if not cluster else replace(config, cluster=True)).client()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _encode_state(state: UserState) -> tuple[bytes, bytes]:
    """Interest vectors concatenated (float32) and everything else as JSON."""
    vec = b"".join(i.vector.astype(np.float32).tobytes() for i in state.interests)
    meta = json.dumps({
        "ts": state.last_ts, "n": state.n_events,
        "off": state.offsets, "ids": list(state.recent_ids),
        "rec": [list(pair) for pair in state.recent_items],
        "int": [{"long": i.long, "short": i.short, "ts": i.ts, "src": i.source,
                 "srcw": i.source_weight} for i in state.interests],
    }, separators=(",", ":"), ensure_ascii=False).encode()
    return vec, meta


def _decode_state(vec: bytes | None, meta: bytes | None) -> UserState:
    if meta is None:
        return UserState()
    m = json.loads(meta)
    rows = m.get("int", [])
    vectors = (np.frombuffer(vec, dtype=np.float32).reshape(len(rows), -1) if rows and vec
               else np.zeros((0, 0), np.float32))
    interests = tuple(Interest(vectors[n].copy(), r["long"], r["short"], r["ts"], r["src"],
                               r["srcw"]) for n, r in enumerate(rows))
    return UserState(interests=interests, last_ts=m.get("ts"), n_events=int(m.get("n", 0)),
                     offsets={str(p): int(o) for p, o in m.get("off", {}).items()},
                     recent_ids=tuple(m.get("ids", ())),
                     recent_items=tuple((str(i), float(t)) for i, t in m.get("rec", ())))


class Store:
    """All Redis access of the app, pipelined per batch."""

    def __init__(self, client: Any, prefix: str, scope: str = "") -> None:
        self.r = client
        self.prefix = prefix
        self.scoped = prefix + scope  # user state and popularity: one replica per scope
        self._cas = client.register_script(_CAS_SCRIPT)
        self._popularity = client.register_script(_POPULARITY_SCRIPT)
        self._history = client.register_script(_HISTORY_SCRIPT)

    # --- keys -------------------------------------------------------------
    def _state_key(self, user_id: str) -> str:
        return f"{self.scoped}:{{u:{user_id}}}:state"

    def _seen_key(self, user_id: str) -> str:
        return f"{self.scoped}:{{u:{user_id}}}:seen"

    def _history_key(self, user_id: str) -> str:
        return f"{self.scoped}:{{u:{user_id}}}:history"

    def _vec_key(self, model_version: str) -> str:
        return f"{self.prefix}:items:vec:{model_version}"

    @property
    def _meta_key(self) -> str:
        return f"{self.prefix}:items:meta"

    @property
    def _log_key(self) -> str:
        return f"{self.prefix}:items:log"

    # --- users ------------------------------------------------------------
    async def read_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        pipe = self.r.pipeline(transaction=False)
        for uid in user_ids:
            pipe.hmget(self._state_key(uid), "vec", "meta", "ver")
            pipe.zrange(self._seen_key(uid), 0, -1)
        res = await pipe.execute()
        out = {}
        for i, uid in enumerate(user_ids):
            vec, meta, ver = res[2 * i]
            seen = frozenset(s.decode() for s in res[2 * i + 1])
            out[uid] = UserRecord(_decode_state(vec, meta), int(ver or 0), seen)
        return out

    async def write_users(self, writes: Sequence[UserWrite], seen_max: int) -> list[str]:
        """Compare-and-set each user; returns the users whose version moved (lost the race)."""
        pipe = self.r.pipeline(transaction=False)
        for w in writes:
            vec, meta = _encode_state(w.state)
            args: list[Any] = [w.expected_version, vec, meta, seen_max, int(w.reset),
                               max(int(w.ttl_s), 1) if w.ttl_s > 0 else 0]
            for item_id, ts in w.seen:
                args += [ts, item_id]
            await self._cas(keys=[self._state_key(w.user_id), self._seen_key(w.user_id),
                                  self._history_key(w.user_id)], args=args, client=pipe)
        res = await pipe.execute()
        return [w.user_id for w, ok in zip(writes, res) if not ok]

    async def append_history(self, entries: Sequence[tuple[str, dict[str, Any]]], keep: int,
                             ttl_s: float) -> None:
        """A batch's snapshots (user id, JSON-able), in event order, in one pipeline (one
        script call per user): each user's list trimmed to the newest ``keep``, expiring
        like the user's other keys."""
        by_user: dict[str, list[bytes]] = {}
        for user_id, entry in entries:
            by_user.setdefault(user_id, []).append(json.dumps(
                entry, separators=(",", ":"), ensure_ascii=False).encode())
        if not by_user or keep <= 0:
            return
        ttl = max(int(ttl_s), 1) if ttl_s > 0 else 0
        pipe = self.r.pipeline(transaction=False)
        for user_id, values in by_user.items():
            await self._history(keys=[self._history_key(user_id)],
                                args=[keep, ttl, *values[-keep:]], client=pipe)
        await pipe.execute()

    async def read_history(self, user_id: str, last: int = 0) -> list[dict[str, Any]]:
        """The user's snapshots, oldest first (the newest ``last`` of them; 0: all)."""
        raw = await self.r.lrange(self._history_key(user_id), -last if last > 0 else 0, -1)
        return [json.loads(v) for v in raw]

    # --- catalog ----------------------------------------------------------
    async def catalog_head(self) -> str:
        """Id of the newest catalog change ('0-0' when none)."""
        last = await self.r.xrevrange(self._log_key, count=1)
        return last[0][0].decode() if last else "0-0"

    async def load_catalog(self, model_version: str) -> tuple[list[str], np.ndarray]:
        ids, vecs = [], []
        async for item_id, raw in self.r.hscan_iter(self._vec_key(model_version), count=2000):
            ids.append(item_id.decode())
            vecs.append(np.frombuffer(raw, dtype=np.float32))
        return ids, (np.stack(vecs) if vecs else np.zeros((0, 0), np.float32))

    async def catalog_changes(self, since: str, count: int = 10000) -> tuple[str, list[str]]:
        """Item ids changed after ``since``, and the new position."""
        res = await self.r.xread({self._log_key: since}, count=count)
        if not res:
            return since, []
        entries = res[0][1]
        return entries[-1][0].decode(), [fields[b"id"].decode() for _, fields in entries]

    async def item_vectors(self, model_version: str,
                           item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not item_ids:
            return {}
        raws = await self.r.hmget(self._vec_key(model_version), list(item_ids))
        return {i: np.frombuffer(raw, dtype=np.float32) for i, raw in zip(item_ids, raws)
                if raw is not None}

    async def item_meta(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not item_ids:
            return {}
        raws = await self.r.hmget(self._meta_key, list(item_ids))
        return {i: json.loads(raw) for i, raw in zip(item_ids, raws) if raw is not None}

    async def put_items(self, model_version: str,
                        upserts: Sequence[tuple[str, np.ndarray, dict[str, Any]]],
                        deletes: Sequence[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for item_id, vec, meta in upserts:
            pipe.hset(self._vec_key(model_version), item_id, vec.astype(np.float32).tobytes())
            pipe.hset(self._meta_key, item_id, json.dumps(meta, ensure_ascii=False))
            pipe.xadd(self._log_key, {"id": item_id, "op": "upsert"},
                      maxlen=ITEM_LOG_MAXLEN, approximate=True)
        for item_id in deletes:
            pipe.hdel(self._vec_key(model_version), item_id)
            pipe.hdel(self._meta_key, item_id)
            for scope in SCOPES:  # a deleted item's popularity goes with it
                pipe.hdel(f"{self.prefix}{scope}:popularity", item_id)
            pipe.xadd(self._log_key, {"id": item_id, "op": "delete"},
                      maxlen=ITEM_LOG_MAXLEN, approximate=True)
        await pipe.execute()

    async def text_vectors(self, model_version: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        raws = await self.r.hmget(f"{self.prefix}:textvec:{model_version}", list(keys))
        return {k: np.frombuffer(raw, dtype=np.float32) for k, raw in zip(keys, raws)
                if raw is not None}

    async def put_text_vectors(self, model_version: str, vecs: dict[str, np.ndarray]) -> None:
        if vecs:
            await self.r.hset(f"{self.prefix}:textvec:{model_version}",
                              mapping={k: v.astype(np.float32).tobytes() for k, v in vecs.items()})

    async def prune_encoders(self, keep: str) -> list[str]:
        """Delete the item and text vectors of every encoder version but ``keep`` (run
        once no worker of an older release is left); returns the versions removed."""
        gone = set()
        for pattern in (f"{self.prefix}:items:vec:*", f"{self.prefix}:textvec:*"):
            async for key in self.r.scan_iter(match=pattern, count=1000):
                version = key.decode().rsplit(":", 1)[1]
                if version != keep:
                    await self.r.delete(key)
                    gone.add(version)
        return sorted(gone)

    # --- co-visits -----------------------------------------------------------
    async def add_covisits(self, source: str, choices: Sequence[tuple[Sequence[str], str]],
                           maxlen: int) -> None:
        """One log entry for a batch's choices (what each user chose, what they chose
        before); every worker tails the log (``covisits_since``)."""
        if not choices:
            return
        packed = json.dumps([[chosen, *previous] for previous, chosen in choices])
        await self.r.xadd(f"{self.scoped}:covisit:log", {"by": source, "c": packed},
                          maxlen=maxlen, approximate=True)

    async def covisits_since(self, since: str, count: int = 1000
                             ) -> tuple[str, list[tuple[str, list[tuple[list[str], str]]]]]:
        """Log entries after ``since``: (new position, [(source, choices)])."""
        res = await self.r.xread({f"{self.scoped}:covisit:log": since}, count=count)
        if not res:
            return since, []
        entries = res[0][1]
        out = [(fields[b"by"].decode(), [(row[1:], row[0]) for row in json.loads(fields[b"c"])])
               for _, fields in entries]
        return entries[-1][0].decode(), out

    # --- popularity -------------------------------------------------------
    async def add_popularity(self, increments: Sequence[tuple[str, float, float]],
                             half_life: float) -> None:
        """Decayed interaction counts, shared by all workers (applied events only)."""
        if increments:
            args: list[Any] = ["inf" if half_life == float("inf") else half_life]
            for item_id, weight, ts in increments:
                args += [item_id, weight, ts]
            await self._popularity(keys=[f"{self.scoped}:popularity"], args=args)

    async def popularity(self) -> dict[str, tuple[float, float]]:
        raw = await self.r.hgetall(f"{self.scoped}:popularity")
        out = {}
        for item_id, value in raw.items():
            count, ts = value.split(b",")
            out[item_id.decode()] = (float(count), float(ts))
        return out

    # --- counters ---------------------------------------------------------
    async def incr_stats(self, counts: dict[str, int]) -> None:
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            pipe = self.r.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(f"{self.prefix}:stats", name, n)
            await pipe.execute()

    async def stats(self) -> dict[str, int]:
        raw = await self.r.hgetall(f"{self.prefix}:stats")
        return {k.decode(): int(v) for k, v in raw.items()}

    async def delete_prefix(self) -> int:
        """Remove every key of this prefix (test runs, embedded demo runs)."""
        n = 0
        async for key in self.r.scan_iter(match=f"{self.prefix}:*", count=1000):
            n += await self.r.delete(key)
        return n
