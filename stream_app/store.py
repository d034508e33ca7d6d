"""Redis: user interest state (compare-and-set), seen items, the item catalog.

Key names: ``redis_keys`` (the layout, one place); Lua scripts: ``redis_scripts``.

User state formats (``state_format``; every format is read, one is written):
  1  vec = the interests' vectors, float32; meta = JSON {ts, n, off, ids, rec, int}
     (releases before format 2); seen scores are event times as given.
  2  meta = b"\x02", the length of Z (uint32, little-endian), Z = zlib of the JSON array
     [ts, n, off, ids, rec ids, rec times, [[long, short, ts, src, srcw, scale], ...]],
     then each interest's vector / scale as float16 (scale: its largest magnitude, so the
     halves keep float16's full relative precision whatever the magnitude); vec = b"".
     Seen scores are whole seconds (a listpack-encoded zset stores them as integers).
     History entries: b"\x02" + raw deflate of a JSON array [ts, id, type, interests,
     top ids, top scores, item, text] (or of the entry's own JSON object when it has
     other keys); format 1 wrote the JSON object as is.
A user's keys expire ``user_ttl_s`` after their last write. A ``forget`` event empties
them (in each scope as it gets there): the seen set and the history go, the state keeps only
the latest event ids (to recognise a redelivery) and expires after ``forget_tombstone_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from stream_app import redis_scripts as scripts
from stream_app.connections import RedisConfig, redis_config
from stream_app.known_users import Known, KnownUsers
from stream_app.model.covisit import Choice, as_choice
from stream_app.model.interest import Interest, UserState
from stream_app.redis_keys import Keys, log_of, shard_of

ITEM_LOG_MAXLEN = 1_000_000
TRAINER_SCOPE = ":trainer"  # the trainer's own replica of user state and popularity
SCOPES = ("", TRAINER_SCOPE)
MODEL_HISTORY_MAX = 1000  # promotions remembered (versions.Registry)
STATE_FORMAT = 2  # the user state encoding written by default (see the module docstring)
STATE_FORMATS = (1, 2)
POPULARITY_LOG_MAX = 10_000  # entries of a worker scope's popularity log (popularity_log_max)
_V2 = b"\x02"  # first byte of a format-2 state or history entry (format 1 starts with "{")


@dataclass(frozen=True)
class UserRecord:
    """A user's state as read, with the CAS token to write it back."""

    state: UserState
    version: int
    seen: frozenset[str]
    writer: str = ""  # the token of the write that made this version
    known: bool = False  # this process's copy (``read_users(known=True)``), not read


@dataclass(frozen=True)
class Written:
    """What ``Store.write_users`` did not write: users that lost the compare-and-set, and
    users whose command failed, with the error (the others were written)."""

    lost: list[str]
    failed: dict[str, Exception]


@dataclass(frozen=True)
class UserWrite:
    user_id: str
    expected_version: int
    state: UserState
    seen: Sequence[tuple[str, float]]  # (item_id, ts) interacted with in this batch
    popular: Sequence[tuple[str, float, float]] = ()  # (item_id, weight, ts) for popularity
    reset: bool = False  # forgotten in this batch: the seen set starts over
    ttl_s: float = 0.0  # both keys expire this long after the write (0: never)
    token: str = ""  # this write's own (``new_token``): read back as ``UserRecord.writer``
    expected_writer: str | None = None  # the ``UserRecord.writer`` folded into (None: any)


def connect(redis: str | RedisConfig, cluster: bool = False) -> Any:
    """An asyncio client (a bare URL: no further credentials or TLS options); create it
    inside the running loop."""
    config = redis_config(redis)
    return (config if not cluster else replace(config, cluster=True)).client()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _encode_state(state: UserState, fmt: int = STATE_FORMAT) -> tuple[bytes, bytes]:
    """(vec, meta) as the state hash holds them in format ``fmt`` (module docstring)."""
    if fmt == 1:
        return _encode_state_v1(state)
    scales = [float(np.max(np.abs(i.vector))) if i.vector.size else 0.0
              for i in state.interests]
    scales = [s if 0.0 < s < math.inf else 1.0 for s in scales]
    halves = b"".join((np.asarray(i.vector, np.float32) / np.float32(s)).astype(np.float16)
                      .tobytes() for i, s in zip(state.interests, scales))
    body = zlib.compress(json.dumps([
        state.last_ts, state.n_events, state.offsets, list(state.recent_ids),
        [i for i, _ in state.recent_items], [t for _, t in state.recent_items],
        [[i.long, i.short, i.ts, i.source, i.source_weight, s]
         for i, s in zip(state.interests, scales)],
    ], separators=(",", ":"), ensure_ascii=False).encode(), 1)
    return b"", _V2 + struct.pack("<I", len(body)) + body + halves


def _encode_state_v1(state: UserState) -> tuple[bytes, bytes]:
    """Format 1: interest vectors concatenated (float32) and everything else as JSON."""
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
    if meta[:1] == _V2:
        return _decode_state_v2(meta)
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


def _decode_state_v2(meta: bytes) -> UserState:
    (size,) = struct.unpack_from("<I", meta, 1)
    ts, n, offsets, ids, rec_ids, rec_ts, rows = json.loads(zlib.decompress(meta[5:5 + size]))
    halves = np.frombuffer(meta, np.float16, offset=5 + size)
    vectors = (halves.reshape(len(rows), -1).astype(np.float32) if rows
               else np.zeros((0, 0), np.float32))
    interests = tuple(Interest(vectors[k] * np.float32(scale), long, short, at, source, weight)
                      for k, (long, short, at, source, weight, scale) in enumerate(rows))
    return UserState(interests=interests, last_ts=ts, n_events=int(n),
                     offsets={str(p): int(o) for p, o in offsets.items()},
                     recent_ids=tuple(ids),
                     recent_items=tuple((str(i), float(t)) for i, t in zip(rec_ids, rec_ts)))


_HISTORY_KEYS = ("ts", "id", "type", "i", "top")


def _encode_history(entry: dict[str, Any], fmt: int = STATE_FORMAT) -> bytes:
    """A history snapshot as the list holds it in format ``fmt`` (module docstring)."""
    if fmt == 1:
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
    known = (set(_HISTORY_KEYS) <= entry.keys() <= {*_HISTORY_KEYS, "item", "text"}
             and entry.get("item", "") is not None and entry.get("text", "") is not None
             and all(isinstance(t, (list, tuple)) and len(t) == 2 for t in entry["top"]))
    packed: Any = ([*(entry[k] for k in _HISTORY_KEYS[:4]), [t[0] for t in entry["top"]],
                    [t[1] for t in entry["top"]], entry.get("item"), entry.get("text")]
                   if known else entry)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw: no zlib header or checksum
    return _V2 + deflate.compress(json.dumps(packed, separators=(",", ":"),
                                             ensure_ascii=False).encode()) + deflate.flush()


def _decode_history(raw: bytes) -> dict[str, Any]:
    if raw[:1] != _V2:
        return json.loads(raw)
    packed = json.loads(zlib.decompress(raw[1:], wbits=-15))
    if isinstance(packed, dict):
        return packed
    ts, event_id, kind, interests, top_ids, top_scores, item, text = packed
    entry = {"ts": ts, "id": event_id, "type": kind, "i": interests,
             "top": [[i, s] for i, s in zip(top_ids, top_scores)]}
    if item is not None:
        entry["item"] = item
    if text is not None:
        entry["text"] = text
    return entry


def new_token() -> str:
    """A write's token: unique across processes and restarts (64 random bits)."""
    return os.urandom(8).hex()


def _parse_popularity(value: bytes) -> tuple[float, float]:
    count, ts = value.split(b",")
    return float(count), float(ts)


def _pack_choices(choices: Sequence[Choice]) -> dict[str, str]:
    """A log entry's fields: ``c`` [[chosen, earlier...]] as workers have always written
    it (a worker of an older release reads it and ignores the rest), ``t`` [[ts, [whole
    seconds each earlier one was chosen before ts...]]] row by row (ts null: not known)."""
    times = [[None, []] if c.at is None else
             [c.at, [] if c.previous_at is None else
              [max(0, round(c.at - t)) for t in c.previous_at]] for c in choices]
    return {"c": json.dumps([[c.chosen, *c.previous] for c in choices]),
            "t": json.dumps(times)}


def _unpack_choices(fields: dict[bytes, bytes]) -> list[Choice]:
    """The choices of a log entry (``_pack_choices``); an entry without times (an older
    release's) counts as of the latest choice."""
    rows = json.loads(fields[b"c"])
    times = json.loads(fields[b"t"]) if b"t" in fields else []
    if len(times) != len(rows):
        times = [[None, []]] * len(rows)
    out = []
    for row, (at, ago) in zip(rows, times):
        previous = row[1:]
        if at is None:
            out.append(Choice(previous, row[0]))
        else:
            out.append(Choice(previous, row[0], float(at), [at - a for a in ago]
                              if len(ago) == len(previous) else None))
    return out


class Store:
    """All Redis access of the app, pipelined per batch."""

    def __init__(self, client: Any, prefix: str, scope: str = "",
                 state_format: int = STATE_FORMAT,
                 popularity_log_max: int = POPULARITY_LOG_MAX, shards: int = 1,
                 known_users_mb: float = 0.0) -> None:
        if state_format not in STATE_FORMATS:
            raise ValueError(f"state format {state_format}: one of {STATE_FORMATS}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = shards  # of the popularity hash and the co-visit log
        self.r = client
        self.prefix = prefix
        self.keys = Keys(prefix, scope)  # user state and popularity: one replica per scope
        self.state_format = state_format  # what user writes use; every format is read
        self.popularity_log_max = popularity_log_max
        self._cas = client.register_script(scripts.CAS)
        self._read_user = client.register_script(scripts.READ_USER)
        self._popularity = client.register_script(scripts.POPULARITY)
        self._popularity_remove = client.register_script(scripts.POPULARITY_REMOVE)
        self._history = client.register_script(scripts.HISTORY)
        self._covisit = client.register_script(scripts.COVISIT)
        self.writer = new_token()  # whose last call ``Keys.once`` remembers
        self.known = KnownUsers(int(known_users_mb * 2 ** 20))  # ``read_users(known=True)``

    @classmethod
    def for_settings(cls, client: Any, s: Any, scope: str = "") -> "Store":
        """A store as ``s`` (``Settings``) configures it."""
        return cls(client, s.key_prefix, scope, s.state_format, s.popularity_log_max,
                   s.shared_key_shards, s.user_cache_mb)

    def popularity_shard(self, item_id: str) -> int:
        return shard_of(item_id, self.shards)

    def _popularity_keys(self, scope: str | None = None, shard: int = 0
                         ) -> tuple[str, str, int]:
        """A shard of the popularity hash of a scope (default: ours), its log and the log's
        length (none for the trainer's replica: one writer, which counts its own)."""
        key = self.keys.popularity(shard, scope)
        tail = scope if scope is not None else self.keys.scope
        return key, log_of(key), 0 if tail == TRAINER_SCOPE else self.popularity_log_max

    # --- users ------------------------------------------------------------
    async def read_users(self, user_ids: Sequence[str], known: bool = False
                         ) -> dict[str, UserRecord]:
        """Each user's state, seen set, version and writer. ``known``: the users this
        store last read or wrote come from its copy (``known_users``; only a write that
        names their version and writer can tell whether it is still current), the
        others are read and remembered."""
        out = {uid: UserRecord(_decode_state(k.vec, k.meta), k.version, k.seen, k.writer,
                               known=True)
               for uid, k in (self.known.take(user_ids) if known else {}).items()}
        missing = [uid for uid in user_ids if uid not in out]
        if not missing:
            return out
        pipe = self.r.pipeline(transaction=False)
        for uid in missing:  # each user's two keys read at one moment (one slot)
            await self._read_user(keys=[self.keys.state(uid), self.keys.seen(uid)], client=pipe)
        res = await pipe.execute()
        for uid, ((vec, meta, ver, by), members) in zip(missing, res):
            seen = frozenset(s.decode() for s in members)
            out[uid] = UserRecord(_decode_state(vec, meta), int(ver or 0), seen,
                                  by.decode() if by else "")
            if known:
                self.known.put(uid, Known(out[uid].version, out[uid].writer, vec, meta, seen))
        return out

    async def write_users(self, writes: Sequence[UserWrite], seen_max: int) -> "Written":
        """Compare-and-set each user, in one pipeline. The users whose version moved (lost
        the race) and those whose command failed (Redis out of memory, a failover) come
        back apart from the rest, which went through: a pipeline is not atomic."""
        pipe = self.r.pipeline(transaction=False)
        whole = self.state_format >= 2  # seen scores in whole seconds
        encoded = []
        for w in writes:
            vec, meta = _encode_state(w.state, self.state_format)
            encoded.append((vec, meta))
            args: list[Any] = [w.expected_version, vec, meta, seen_max, int(w.reset),
                               max(int(w.ttl_s), 1) if w.ttl_s > 0 else 0, w.token,
                               "*" if w.expected_writer is None else w.expected_writer]
            for item_id, ts in w.seen:
                args += [math.floor(ts) if whole else ts, item_id]
            await self._cas(keys=[self.keys.state(w.user_id), self.keys.seen(w.user_id),
                                  self.keys.history(w.user_id)], args=args, client=pipe)
        try:
            # a cluster's pipeline refreshes its slots and retries a failed node only when
            # it raises: there a partial failure raises, and the batch is retried whole
            res = await pipe.execute(raise_on_error=hasattr(self.r, "nodes_manager"))
        except BaseException:
            self.known.drop(w.user_id for w in writes)  # written or not: read them again
            raise
        lost: list[str] = []
        failed: dict[str, Exception] = {}
        for w, ok, (vec, meta) in zip(writes, res, encoded):
            if isinstance(ok, Exception):
                failed[w.user_id] = ok
            elif not ok:
                lost.append(w.user_id)
            elif w.expected_writer is not None:
                self.known.wrote(w.user_id, (w.expected_version, w.expected_writer), w.token,
                                 vec, meta, [item_id for item_id, _ in w.seen], w.reset,
                                 seen_max)
                continue
            self.known.drop([w.user_id])
        return Written(lost, failed)

    async def append_history(self, entries: Sequence[tuple[str, dict[str, Any]]], keep: int,
                             ttl_s: float) -> None:
        """A batch's snapshots (user id, JSON-able), in event order, in one pipeline (one
        script call per user): each user's list trimmed to the newest ``keep``, expiring
        like the user's other keys. The same call again appends nothing for the users it
        already reached."""
        by_user: dict[str, list[bytes]] = {}
        for user_id, entry in entries:
            by_user.setdefault(user_id, []).append(_encode_history(entry, self.state_format))
        if not by_user or keep <= 0:
            return
        ttl = max(int(ttl_s), 1) if ttl_s > 0 else 0
        pipe = self.r.pipeline(transaction=False)
        for user_id, values in by_user.items():
            await self._history(keys=[self.keys.history(user_id)],
                                args=[keep, ttl, *values[-keep:]], client=pipe)
        await pipe.execute()

    async def read_history(self, user_id: str, last: int = 0) -> list[dict[str, Any]]:
        """The user's snapshots, oldest first (the newest ``last`` of them; 0: all)."""
        raw = await self.r.lrange(self.keys.history(user_id), -last if last > 0 else 0, -1)
        return [_decode_history(v) for v in raw]

    # --- catalog ----------------------------------------------------------
    async def catalog_head(self) -> str:
        """Id of the newest catalog change ('0-0' when none)."""
        last = await self.r.xrevrange(self.keys.item_log, count=1)
        return last[0][0].decode() if last else "0-0"

    async def load_catalog(self, model_version: str) -> tuple[list[str], np.ndarray]:
        ids, vecs = [], []
        key = self.keys.item_vectors(model_version)
        async for item_id, raw in self.r.hscan_iter(key, count=2000):
            ids.append(item_id.decode())
            vecs.append(np.frombuffer(raw, dtype=np.float32))
        return ids, (np.stack(vecs) if vecs else np.zeros((0, 0), np.float32))

    async def catalog_changes(self, since: str, count: int = 10000) -> tuple[str, list[str]]:
        """Item ids changed after ``since``, and the new position."""
        res = await self.r.xread({self.keys.item_log: since}, count=count)
        if not res:
            return since, []
        entries = res[0][1]
        return entries[-1][0].decode(), [fields[b"id"].decode() for _, fields in entries]

    async def item_vectors(self, model_version: str,
                           item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not item_ids:
            return {}
        raws = await self.r.hmget(self.keys.item_vectors(model_version), list(item_ids))
        return {i: np.frombuffer(raw, dtype=np.float32) for i, raw in zip(item_ids, raws)
                if raw is not None}

    async def item_meta(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not item_ids:
            return {}
        raws = await self.r.hmget(self.keys.item_meta, list(item_ids))
        return {i: json.loads(raw) for i, raw in zip(item_ids, raws) if raw is not None}

    async def put_items(self, model_version: str,
                        upserts: Sequence[tuple[str, np.ndarray, dict[str, Any]]],
                        deletes: Sequence[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for item_id, vec, meta in upserts:
            pipe.hset(self.keys.item_vectors(model_version), item_id,
                      vec.astype(np.float32).tobytes())
            pipe.hset(self.keys.item_meta, item_id, json.dumps(meta, ensure_ascii=False))
            pipe.xadd(self.keys.item_log, {"id": item_id, "op": "upsert"},
                      maxlen=ITEM_LOG_MAXLEN, approximate=True)
        for item_id in deletes:
            pipe.hdel(self.keys.item_vectors(model_version), item_id)
            pipe.hdel(self.keys.item_meta, item_id)
            pipe.xadd(self.keys.item_log, {"id": item_id, "op": "delete"},
                      maxlen=ITEM_LOG_MAXLEN, approximate=True)
        if deletes:
            for shard in range(self.shards):  # every shard: a count left behind by a change
                for scope in SCOPES:  # of the shard count goes too (logged)
                    key, log, maxlen = self._popularity_keys(scope, shard)
                    await self._popularity_remove(keys=[key, log], args=[maxlen, *deletes],
                                                  client=pipe)
        await pipe.execute()

    async def text_vectors(self, model_version: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        raws = await self.r.hmget(self.keys.text_vectors(model_version), list(keys))
        return {k: np.frombuffer(raw, dtype=np.float32) for k, raw in zip(keys, raws)
                if raw is not None}

    async def put_text_vectors(self, model_version: str, vecs: dict[str, np.ndarray]) -> None:
        if vecs:
            await self.r.hset(self.keys.text_vectors(model_version),
                              mapping={k: v.astype(np.float32).tobytes() for k, v in vecs.items()})

    async def prune_encoders(self, keep: str) -> list[str]:
        """Delete the item and text vectors of every encoder version but ``keep`` (run
        once no worker of an older release is left); returns the versions removed."""
        gone = set()
        for pattern in self.keys.encoder_patterns():
            async for key in self.r.scan_iter(match=pattern, count=1000):
                version = key.decode().rsplit(":", 1)[1]
                if version != keep:
                    await self.r.delete(key)
                    gone.add(version)
        return sorted(gone)

    # --- co-visits -----------------------------------------------------------
    async def add_covisits(self, source: str, choices: Sequence[Choice],
                           maxlen: int, token: str = "") -> None:
        """One log entry for a batch's choices (what each user chose, what they chose
        before), in the log shard of ``source``; every worker tails every shard
        (``covisits_since``). The same call again (same ``token``) adds nothing."""
        if not choices:
            return
        fields = _pack_choices([as_choice(c) for c in choices])
        key = self.keys.covisit_log(shard_of(source, self.shards))
        await self._covisit(keys=[self.keys.once(key, self.writer), key],
                            args=[token or new_token(), maxlen, "by", source,
                                  *(x for pair in fields.items() for x in pair)])

    async def covisits_since(self, since: str, shard: int = 0, count: int = 1000
                             ) -> tuple[str, list[tuple[str, list[Choice]]]]:
        """Entries of one log shard after ``since``: (new position, [(source, choices)])."""
        res = await self.r.xread({self.keys.covisit_log(shard): since}, count=count)
        if not res:
            return since, []
        entries = res[0][1]
        out = [(fields[b"by"].decode(), _unpack_choices(fields)) for _, fields in entries]
        return entries[-1][0].decode(), out

    # --- popularity -------------------------------------------------------
    async def add_popularity(self, increments: Sequence[tuple[str, float, float]],
                             half_life: float) -> None:
        """``count_popularity``, raising the first failure."""
        failed = await self.count_popularity(increments, half_life)
        if failed:
            raise next(iter(failed.values()))

    async def count_popularity(self, increments: Sequence[tuple[str, float, float]],
                               half_life: float, token: str = "") -> dict[int, Exception]:
        """Decayed interaction counts, shared by all workers (applied events only); the
        values they give are logged for the workers that follow (``popularity_since``).
        One script call per shard the items fall in, concurrently (a Redis Cluster sends
        each to its node). Returns the shards whose call failed, with the error: the
        others' increments went through (shards are not one transaction). The same
        increments again with the same ``token`` (a retry) count nothing twice; without
        one, the call is its own."""
        token = token or new_token()
        by_shard: dict[int, list[Any]] = {}
        for item_id, weight, ts in increments:
            by_shard.setdefault(self.popularity_shard(item_id), []).extend((item_id, weight, ts))
        hl = "inf" if half_life == float("inf") else half_life

        async def count(shard: int) -> None:
            key, log, maxlen = self._popularity_keys(shard=shard)
            await self._popularity(keys=[self.keys.once(key, self.writer), key, log],
                                   args=[token, hl, maxlen, *by_shard[shard]])

        shards = list(by_shard)
        if len(shards) == 1:  # no task for the one call of a single Redis
            try:
                await count(shards[0])
            except Exception as exc:  # noqa: BLE001 - returned, the caller decides
                return {shards[0]: exc}
            return {}
        results = await asyncio.gather(*map(count, shards), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancelled: not a failed count
        return {shard: r for shard, r in zip(shards, results) if isinstance(r, Exception)}

    def _own_items(self, shard: int, items: dict[str, Any]) -> dict[str, Any]:
        """The entries of a shard whose items belong there: after a change of the shard
        count an item moves, and the value left in its old shard is not read."""
        if self.shards == 1:
            return items
        return {i: v for i, v in items.items() if self.popularity_shard(i) == shard}

    async def popularity(self) -> dict[str, tuple[float, float]]:
        """The whole hash (every shard, HGETALL: tests and the footprint bench's full
        read) in one dict."""
        out: dict[str, tuple[float, float]] = {}
        for shard in range(self.shards):
            raw = await self.r.hgetall(self._popularity_keys(shard=shard)[0])
            out.update(self._own_items(shard, {item_id.decode(): _parse_popularity(value)
                                               for item_id, value in raw.items()}))
        return out

    async def popularity_snapshots(self) -> tuple[dict[int, str],
                                                  dict[str, tuple[float, float]]]:
        """Every shard's ``popularity_snapshot``: the log position of each, and their
        entries in one dict."""
        positions: dict[int, str] = {}
        entries: dict[str, tuple[float, float]] = {}
        for shard in range(self.shards):
            positions[shard], part = await self.popularity_snapshot(shard)
            entries.update(part)
        return positions, entries

    async def popularity_snapshot(self, shard: int = 0, count: int = 5000
                                  ) -> tuple[str, dict[str, tuple[float, float]]]:
        """A whole shard of the hash (HSCAN: Redis is never blocked on a large one) and the
        log position to follow it from: read before the hash, so a change made meanwhile is
        in both, and applying a logged value again changes nothing."""
        key, log, _ = self._popularity_keys(shard=shard)
        last = await self.r.xrevrange(log, count=1)
        out: dict[str, tuple[float, float]] = {}
        async for item_id, value in self.r.hscan_iter(key, count=count):
            out[item_id.decode()] = _parse_popularity(value)
        return (last[0][0].decode() if last else "0-0"), self._own_items(shard, out)

    async def popularity_since(self, since: str, shard: int = 0, count: int = 1000
                               ) -> tuple[str, list[tuple[str, tuple[float, float] | None]],
                                          bool] | None:
        """Values a shard of the hash took after its log position ``since``, in order
        (None: removed): (new position, changes, more: ``count`` entries read, the log may
        hold more). None when entries after ``since`` were trimmed away: read the hash
        again."""
        _, log, _ = self._popularity_keys(shard=shard)
        res = await self.r.xread({log: since}, count=count)
        if not res:
            return since, [], False
        changes: list[tuple[str, tuple[float, float] | None]] = []
        position = since
        for entry_id, fields in res[0][1]:
            if fields.get(b"", b"").decode() != position:
                return None
            position = entry_id.decode()
            changes += [(item.decode(), _parse_popularity(value) if value else None)
                        for item, value in fields.items() if item]
        if self.shards > 1:  # as ``_own_items``: an item is read from its own shard only
            changes = [c for c in changes if self.popularity_shard(c[0]) == shard]
        return position, changes, len(res[0][1]) >= count

    # --- counters ---------------------------------------------------------
    async def incr_stats(self, counts: dict[str, int]) -> None:
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            pipe = self.r.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(self.keys.stats, name, n)
            await pipe.execute()

    async def stats(self) -> dict[str, int]:
        raw = await self.r.hgetall(self.keys.stats)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def delete_prefix(self) -> int:
        """Remove every key of this prefix (test runs, embedded demo runs)."""
        n = 0
        async for key in self.r.scan_iter(match=self.keys.everything, count=1000):
            n += await self.r.delete(key)
        return n
