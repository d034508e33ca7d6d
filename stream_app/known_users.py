"""What a process last read or wrote of its users' state, so that a user's next batch folds
into it without reading it back from Redis: one round trip, and the seen set's transfer
and parsing, fewer per batch (``Store.read_users(..., known=True)``).

A guess, checked by the write that follows: the compare-and-set names both the version
and the writer's token of the copy it folded into, so a copy gone stale loses the set and
the user is read again. Stale means another process wrote the user (its partition moved
away and back), the keys expired, or a failover lost the write; tokens are random, so a
user written again up to the same version by someone else does not pass for the copy. A
batch that would write nothing (every event already in the copy: a redelivery) has no
write to check it, so it reads the user instead (``Processor._apply``).

Kept as the bytes Redis holds (decoded as a read would), within a memory budget: the
least recently used users go first. Pure: no I/O."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

# estimated bytes of a kept user beyond its stored bytes, and per seen item id (a short
# string in a frozenset: ~107 bytes measured with tracemalloc)
ENTRY_BYTES = 400
SEEN_ITEM_BYTES = 110


@dataclass(frozen=True)
class Known:
    """One user as the state hash and the seen set now hold them (as far as we know)."""

    version: int
    writer: str
    vec: bytes | None  # the hash's fields as stored (None: absent)
    meta: bytes | None
    seen: frozenset[str]

    @property
    def nbytes(self) -> int:
        """Estimated memory held."""
        return (ENTRY_BYTES + len(self.vec or b"") + len(self.meta or b"")
                + SEEN_ITEM_BYTES * len(self.seen))


class KnownUsers:
    def __init__(self, most_bytes: int) -> None:
        self.most_bytes = most_bytes
        self.nbytes = 0
        self._users: OrderedDict[str, Known] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def take(self, user_ids: Iterable[str]) -> dict[str, Known]:
        """The users known, now the most recently used."""
        out = {}
        for uid in user_ids:
            known = self._users.get(uid)
            if known is not None:
                self._users.move_to_end(uid)
                out[uid] = known
        return out

    def put(self, user_id: str, known: Known) -> None:
        self.drop([user_id])
        if known.nbytes > self.most_bytes:  # none at all (0), or this one alone too big
            return
        self._users[user_id] = known
        self.nbytes += known.nbytes
        while self.nbytes > self.most_bytes:
            _, gone = self._users.popitem(last=False)
            self.nbytes -= gone.nbytes

    def wrote(self, user_id: str, expected: tuple[int, str], token: str, vec: bytes,
              meta: bytes, seen: Sequence[str], reset: bool, seen_max: int) -> None:
        """A compare-and-set from ``expected`` (version, writer) went through: the user is
        now at the next version, by ``token``, with ``seen`` added (after ``reset``, only
        those). Unknown unless the copy it was made from is the one held: then the new
        seen set is that one's plus these. A seen set the write trimmed (more than
        ``seen_max``) is not worked out here: the user is read next time."""
        before = self._users.get(user_id)
        if before is None or (before.version, before.writer) != expected:
            self.drop([user_id])
            return
        now = frozenset(seen) if reset else before.seen.union(seen)
        if len(now) > seen_max:
            self.drop([user_id])
            return
        self.put(user_id, Known(expected[0] + 1, token, vec, meta, now))

    def drop(self, user_ids: Iterable[str]) -> None:
        for uid in user_ids:
            gone = self._users.pop(uid, None)
            if gone is not None:
                self.nbytes -= gone.nbytes
