"""The evaluation harness: metrics, protocol, dataset layouts, drift simulation, a tiny run."""

from __future__ import annotations

import asyncio
import math

import pytest

from stream_app.config import Settings
from stream_app.evaluation.commands import split_variants
from stream_app.evaluation.datasets import Dataset, load_movielens, repeated
from stream_app.evaluation.drift import simulate
from stream_app.evaluation.feedback import FeedbackSimulator
from stream_app.evaluation.offline import (METRIC_COLUMNS, RANKERS, evaluate, markdown_table,
                                           to_records)
from stream_app.evaluation.protocol import hit_ndcg, judge
from tests.fakes import FakeEncoder


def test_hit_and_ndcg():
    assert hit_ndcg(["a", "b", "c"], "a") == (1.0, 1.0)
    assert hit_ndcg(["a", "b", "c"], "c") == (1.0, pytest.approx(1 / math.log2(4)))
    assert hit_ndcg(["a", "b"], "z") == (0.0, 0.0)
    assert hit_ndcg([str(i) for i in range(20)], "12", k=10) == (0.0, 0.0)


def test_each_event_is_judged_against_the_recommendation_after_the_previous_one():
    events = [{"event_id": "1", "user_id": "u", "item_id": "a"},
              {"event_id": "2", "user_id": "v", "item_id": "x"},
              {"event_id": "3", "user_id": "u", "item_id": "b"},
              {"event_id": "4", "user_id": "u", "item_id": "c"},
              {"event_id": "5", "user_id": "v", "item_id": "y"}]
    recs = {"1": ["b", "q"], "2": ["q", "y"], "3": ["q"]}  # "4" never arrived; not needed
    j = judge(events, recs)
    assert j.prequential.n == 3 and j.prequential.hits == 2.0
    assert j.leave_one_out.n == 2 and j.leave_one_out.hits == 1.0  # u's "c" missed, v's "y" hit
    assert j.leave_one_out.ndcg == pytest.approx(1 / math.log2(3))
    assert j.missing == 0
    assert judge(events, {}).missing == 3


def _write(path, name, text):
    (path / name).write_text(text, encoding="latin-1")


def test_three_movielens_layouts_read_alike(tmp_path):
    small = tmp_path / "ml-latest-small"
    small.mkdir()
    (small / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story (1995)",'
                                      'Animation|Comedy\n2,Heat (1995),Action\n')
    (small / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                       "1,2,4.0,20\n1,1,5.0,10\n2,1,3.0,15\n")
    k100 = tmp_path / "ml-100k"
    k100.mkdir()
    flags = ["0"] * 19
    toy, heat = flags.copy(), flags.copy()
    toy[3] = toy[5] = "1"
    heat[1] = "1"
    _write(k100, "u.item", f"1|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(toy)}\n"
                           f"2|Heat (1995)|01-Jan-1995||http://x|{'|'.join(heat)}\n")
    _write(k100, "u.data", "1\t2\t4\t20\n1\t1\t5\t10\n2\t1\t3\t15\n")
    m1 = tmp_path / "ml-1m"
    m1.mkdir()
    _write(m1, "movies.dat", "1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n")
    _write(m1, "ratings.dat", "1::2::4::20\n1::1::5::10\n2::1::3::15\n")
    loaded = [load_movielens(d) for d in (small, k100, m1)]
    for data in loaded:
        assert [e["event_id"] for e in data.events] == ["ml-1-1", "ml-2-1", "ml-1-2"]
        assert data.events[0] == {"event_id": "ml-1-1", "user_id": "1", "type": "rate",
                                  "item_id": "1", "rating": 5.0, "ts": 10.0}
        toy_item = next(i for i in data.items if i["item_id"] == "1")
        assert toy_item["tags"] == ["Animation", "Comedy"]
        assert toy_item["text"] == "A animation, comedy movie from 1995."
    assert len(load_movielens(small, limit_users=1).events) == 2
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path)


def test_records_are_keyed_like_a_topic():
    offsets: dict[int, int] = {}
    values = [{"user_id": u, "ts": 1.0} for u in ["a", "b", "a", "a"]]
    recs = to_records("t", values, "user_id", 4, offsets)
    a = [r for r in recs if r.key == b"a"]
    assert len({r.partition for r in a}) == 1
    assert [r.offset for r in a] == sorted(r.offset for r in a)
    assert len({(r.partition, r.offset) for r in recs}) == 4


def test_drift_simulation_shape(sample_catalog):
    events, users = simulate(sample_catalog)
    assert len(users) == 8 * 7
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    genre = {i["item_id"]: i["tags"][0] for i in sample_catalog}
    by_id = {e["event_id"]: e for e in events}
    for u in users.values():
        assert (len(u["a"]), len(u["b"]), len(u["back"])) == (20, 15, 8)
        assert {genre[by_id[e]["item_id"]] for e in u["a"] + u["back"]} == {u["from"]}
        assert {genre[by_id[e]["item_id"]] for e in u["b"]} == {u["to"]}
        items = [by_id[e]["item_id"] for e in u["a"] + u["back"]]
        assert len(set(items)) == len(items)  # coming back means new items of the old genre
        assert by_id[u["b"][0]]["ts"] - by_id[u["a"][-1]]["ts"] >= 3 * 86400


def _tiny(users: int, per_user: int) -> tuple[list[dict], list[dict]]:
    """30 items; each user rates ``per_user`` of them a minute apart."""
    items = [{"item_id": f"i{n}", "title": f"item {n}"} for n in range(30)]
    events = [{"event_id": f"e{u}-{n}", "user_id": f"u{u}", "type": "rate",
               "item_id": f"i{(u * 7 + n * 3) % 30}", "rating": 4.0, "ts": 1e9 + 60 * n + u}
              for n in range(per_user) for u in range(users)]
    return items, events


@pytest.mark.integration
def test_a_tiny_evaluation_runs_and_judges_each_variant(redis_url):
    items, events = _tiny(10, 6)
    s = Settings.from_env({}).replace(redis_url=redis_url, key_prefix="satest-eval",
                                      batch_size=16)
    rows = asyncio.run(evaluate(s, FakeEncoder(), items, events,
                                ["default", "ablation: no co-visits"], progress=False))
    assert [r["variant"] for r in rows] == ["default", "ablation: no co-visits"]
    for r in rows:
        assert r["prequential"]["n"] == 50 and r["leave_one_out"]["n"] == 10
        assert r["new_users"]["n"] == 40 and r["new_items"]["n"] > 0
        assert r["dead_letters"] == 0 and r["events_per_s"] > 0


def test_ranker_variants_are_replayed_and_judged_without_redis():
    items, events = _tiny(10, 6)
    names = list(RANKERS)
    rows = asyncio.run(evaluate(Settings.from_env({}), FakeEncoder(), items, events, names,
                                progress=False))
    assert [r["variant"] for r in rows] == names
    for r in rows:
        assert set(r) == {"variant", "prequential", "leave_one_out", "new_items", "new_users",
                          "missing", "events_per_s", "dead_letters"}
        assert r["prequential"]["n"] == 50 and r["leave_one_out"]["n"] == 10
        assert r["new_users"]["n"] == 40  # each user's 2nd..5th rating
        assert r["missing"] == 0 and r["dead_letters"] == 0 and r["events_per_s"] > 0
    table = markdown_table(rows, METRIC_COLUMNS).splitlines()
    assert "new items HR@10" in table[0] and "new users HR@10" in table[0]
    assert len(table) == 2 + len(names)


def test_variant_names_may_hold_commas():
    known = ["default", "static: one vector, no decay", *RANKERS]
    assert split_variants("item-kNN (co-occurrence, last 20)", known) == [
        "item-kNN (co-occurrence, last 20)"]
    assert split_variants("default,static: one vector, no decay,popularity (decayed, ranker)",
                          known) == ["default", "static: one vector, no decay",
                                     "popularity (decayed, ranker)"]
    assert split_variants("default, nope,x", known) == ["default", "nope", "x"]


def test_simulated_feedback_waits_for_both_the_list_and_the_next_choice():
    e1 = {"event_id": "1", "user_id": "u", "item_id": "a", "ts": 10.0}
    e2 = {"event_id": "2", "user_id": "u", "item_id": "c", "ts": 20.0}
    e3 = {"event_id": "3", "user_id": "u", "item_id": "z", "ts": 30.0}
    sim = FeedbackSimulator()
    assert sim.on_event(e1) == []  # nothing shown yet
    assert sim.on_recommendation("1", ["b", "c", "d"]) == []  # the next choice is unknown
    first = sim.on_event(e2)
    # a click on the chosen item, one record skipping the others
    assert [(f.get("item_id") or f["item_ids"], f["type"]) for f in first] == [
        ("c", "click"), (["b", "d"], "skip")]
    assert {f["ts"] for f in first} == {20.0}  # given when the choice was made, not earlier
    assert sim.on_event(e3) == []  # the list for "2" has not arrived (Kafka can be late)
    late = sim.on_recommendation("2", ["x", "y"])
    assert [(f["item_ids"], f["type"]) for f in late] == [(["x", "y"], "skip")]
    assert {f["recommendation_id"] for f in late} != {f["recommendation_id"] for f in first}
    # a list longer than a record may name: its skips in records of at most that many
    small = FeedbackSimulator(max_items=2)
    small.on_event(e1)
    small.on_recommendation("1", ["b", "c", "d", "e", "f", "g"])
    assert [f.get("item_ids") for f in small.on_event(e2)] == [None, ["b", "d"], ["e", "f"],
                                                                ["g"]]


@pytest.mark.integration
def test_a_tiny_fine_tuned_evaluation_trains_and_follows(redis_url):
    items, events = _tiny(20, 12)
    s = Settings.from_env({}).replace(redis_url=redis_url, key_prefix="satest-eval-ft",
                                      batch_size=16, trainer_batch_size=60)
    (row,) = asyncio.run(evaluate(s, FakeEncoder(), items, events,
                                  ["fine-tuned (trainer + simulated feedback)"],
                                  progress=False))
    assert row["prequential"]["n"] == 220
    training = row["training"]
    assert training["rounds"] >= 3 and training["promoted"] + training["refused"] == \
        training["rounds"]


@pytest.mark.integration
def test_a_round_trains_while_the_stream_goes_on_and_serves_from_the_next_round(
        redis_url, monkeypatch):
    """The replay does not wait for a round: it follows a version when the next round is
    due (a fixed point in the stream, whatever the machine's speed), and the events in
    between are served by the version before it."""
    import stream_app.evaluation.offline as offline
    from stream_app.pipeline import Processor
    from stream_app.trainer import Trainer

    seen = {"events": 0}
    marks: list[tuple[str, int]] = []
    process, train = Processor.process_activity, Trainer.round

    async def counted(self, records, *args, **kwargs):
        out = await process(self, records, *args, **kwargs)
        seen["events"] += len(records)  # the worker's (the trainer applies, not processes)
        return out

    async def slow_round(self):
        marks.append(("begin", seen["events"]))
        await asyncio.sleep(0.2)  # the stream moves on meanwhile (one batch of 16 at most)
        out = await train(self)
        marks.append(("end", seen["events"]))
        return out

    async def follow(catalog, registry):
        marks.append(("follow", seen["events"]))

    monkeypatch.setattr(Processor, "process_activity", counted)
    monkeypatch.setattr(Trainer, "round", slow_round)
    monkeypatch.setattr(offline, "follow", follow)
    items, events = _tiny(20, 12)
    s = Settings.from_env({}).replace(redis_url=redis_url, key_prefix="satest-eval-ft2",
                                      batch_size=16, trainer_batch_size=60)
    asyncio.run(evaluate(s, FakeEncoder(), items, events,
                         ["fine-tuned (trainer + simulated feedback)"], progress=False))
    begins = [n for kind, n in marks if kind == "begin"]
    follows = [n for kind, n in marks if kind == "follow"]
    ends = [n for kind, n in marks if kind == "end"]
    assert len(begins) >= 3 and follows == begins[1:]  # each version when the next begins
    assert all(end > begin for begin, end in zip(begins, ends))  # events went on meanwhile


def test_a_repeated_log_is_earlier_copies_with_new_users_and_never_in_the_future():
    events = [{"event_id": "a", "user_id": "1", "item_id": "x", "ts": 1e6},
              {"event_id": "b", "user_id": "2", "item_id": "y", "ts": 1e6 + 60.0}]
    data = repeated(Dataset("d", [{"item_id": "x"}], events), 3)
    assert data.name == "d-x3" and len(data.events) == 6
    assert [e["user_id"] for e in data.events] == ["1~0", "2~0", "1~1", "2~1", "1~2", "2~2"]
    ts = [e["ts"] for e in data.events]
    # the last copy as it is; each earlier one a span (the log's, plus a day) before it
    assert ts == sorted(ts) and ts[4:] == [1e6, 1e6 + 60.0] and ts[2] == 1e6 - 60.0 - 86400.0
    assert len({e["event_id"] for e in data.events}) == 6
    # a log too near 1970 for whole spans: copies overlap in time, interleaved, none < 0
    # a log too near 1970 for whole spans: copies overlap in time, their events in
    # event-time order, the earlier copy first at equal times, none before 0
    long = [{**events[0], "ts": 100.0}, {**events[1], "ts": 300.0}]
    near = repeated(Dataset("d", [], long), 3)  # copies 50 s apart (100 / 2)
    assert [(e["user_id"], e["ts"]) for e in near.events] == [
        ("1~0", 0.0), ("1~1", 50.0), ("1~2", 100.0), ("2~0", 200.0), ("2~1", 250.0),
        ("2~2", 300.0)]
    # where rounding would put the first copy's first event a hair below 0 (ml-latest-small's
    # first time, 46 copies), it is at 0
    movielens = [{**events[0], "ts": 828124615.0}, {**events[1], "ts": 1537632280.0}]
    assert min(e["ts"] for e in repeated(Dataset("d", [], movielens), 46).events) == 0.0
    assert repeated(data, 1) is data
