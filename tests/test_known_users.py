"""A process's copy of its users' state (``known_users``): within its memory budget, and
only ever the write it was made from; unit tier (the compare-and-set that checks it and
the reads that replace it: test_store)."""

from __future__ import annotations

from stream_app.known_users import ENTRY_BYTES, SEEN_ITEM_BYTES, Known, KnownUsers


def _known(version: int, writer: str, seen: set[str], meta: bytes = b"m" * 100) -> Known:
    return Known(version, writer, b"", meta, frozenset(seen))


def test_the_least_recently_used_users_go_first_within_the_budget():
    one = _known(1, "t", set()).nbytes
    assert one == ENTRY_BYTES + 100
    users = KnownUsers(2 * one)
    users.put("a", _known(1, "t", set()))
    users.put("b", _known(1, "t", set()))
    assert set(users.take(["a"])) == {"a"}  # a is now the most recent
    users.put("c", _known(1, "t", set()))
    assert len(users) == 2 and set(users.take(["a", "b", "c"])) == {"a", "c"}
    assert users.nbytes == 2 * one
    # a user with a long seen list counts for it, and pushes out as many as it needs
    users.put("d", _known(1, "t", {"x"}))
    assert set(users.take(["a", "c", "d"])) == {"d"}
    assert users.nbytes == one + SEEN_ITEM_BYTES


def test_nothing_is_kept_without_a_budget_nor_what_alone_exceeds_it():
    users = KnownUsers(0)
    users.put("a", _known(1, "t", set()))
    assert len(users) == 0 and users.take(["a"]) == {}
    users = KnownUsers(1000)
    users.put("b", _known(1, "t", set(), meta=b"m" * 2000))
    assert len(users) == 0 and users.nbytes == 0


def test_a_write_from_the_copy_held_moves_it_on():
    users = KnownUsers(10_000)
    users.put("a", _known(3, "t1", {"x"}))
    users.wrote("a", (3, "t1"), "t2", b"", b"new", ["y"], reset=False, seen_max=10)
    now = users.take(["a"])["a"]
    assert (now.version, now.writer, now.meta, now.seen) == (4, "t2", b"new", {"x", "y"})
    assert users.nbytes == now.nbytes  # the old copy's bytes are gone with it


def test_a_reset_keeps_only_what_came_after_it():
    users = KnownUsers(10_000)
    users.put("a", _known(3, "t1", {"x"}))
    users.wrote("a", (3, "t1"), "t2", b"", b"new", ["y"], reset=True, seen_max=10)
    assert users.take(["a"])["a"].seen == {"y"}


def test_a_write_from_another_copy_or_one_the_store_trimmed_is_forgotten():
    users = KnownUsers(10_000)
    users.put("a", _known(3, "t1", {"x"}))
    users.wrote("a", (3, "other"), "t2", b"", b"new", ["y"], reset=False, seen_max=10)
    assert users.take(["a"]) == {}  # not the copy held: it may be anything now
    users.wrote("b", (0, ""), "t3", b"", b"new", ["y"], reset=False, seen_max=10)
    assert users.take(["b"]) == {}  # never held
    users.put("c", _known(1, "t1", {"x", "y"}))
    users.wrote("c", (1, "t1"), "t2", b"", b"new", ["z"], reset=False, seen_max=2)
    assert users.take(["c"]) == {}  # Redis trimmed the seen set: read it again
    users.put("d", _known(1, "t1", set()))
    users.drop(["d"])
    assert users.take(["d"]) == {} and users.nbytes == 0
