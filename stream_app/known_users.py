"""What a process last read or wrote of its users' state, so that a user's next batch folds
into it without reading it back from Redis: one round trip, and the decoding of the state
and of the seen set, fewer per batch (``Store.read_users(..., known=True)``).

A guess, checked by every write: the compare-and-set names both the version and the
writer's token of the copy it folded into, so a copy gone stale loses the set and the
user is read again. Stale means another process wrote the user (its partition moved away
and back), the keys expired, or a failover lost the write; tokens are random, so a user
written again up to the same version by someone else does not pass for the copy.

Bounded: the least recently used users go first. Pure: no I/O."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


@dataclass
class Known:
    """One user as the state hash and the seen set now hold them (as far as we know)."""

    version: int
    writer: str
    vec: bytes  # the hash's fields as stored, decoded on first use
    meta: bytes
    seen: frozenset[str]
    state: Any = None  # the decoded ``UserState``, once a batch used it


class KnownUsers:
    def __init__(self, most: int) -> None:
        self.most = most
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
        if self.most <= 0:
            return
        self._users[user_id] = known
        self._users.move_to_end(user_id)
        while len(self._users) > self.most:
            self._users.popitem(last=False)

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
            self._users.pop(uid, None)
