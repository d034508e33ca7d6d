"""Feedback simulated from a rating log: what a user shown a list would have done.

The user's next rating decides: a click on that item when the list held it, a skip
for every other item shown (one record naming them all), at the time of that next
rating (never earlier). It can
be given only once both are known: the next rating and the list shown before it,
whichever arrives first (through Kafka the list may come after the next event).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from stream_app.contract import recommendation_id


def simulated_feedback(previous: Mapping[str, Any], shown: Sequence[str],
                       chosen: Mapping[str, Any], max_items: int = 100
                       ) -> list[dict[str, Any]]:
    """Feedback on the list shown after ``previous`` once the user made ``chosen``; the
    skips in records of at most ``max_items`` (``Settings.max_feedback_items``)."""
    user = str(chosen["user_id"])
    rec_id = recommendation_id(user, str(previous["event_id"]))
    target = str(chosen["item_id"])
    out = []
    if target in shown:
        out.append({"user_id": user, "item_id": target, "type": "click",
                    "recommendation_id": rec_id, "ts": chosen["ts"]})
    skipped = [item for item in shown if item != target]
    for at in range(0, len(skipped), max_items):  # a record for the items passed over
        out.append({"user_id": user, "item_ids": skipped[at:at + max_items], "type": "skip",
                    "recommendation_id": rec_id, "ts": chosen["ts"]})
    return out


class FeedbackSimulator:
    """Pairs each list shown with the user's next event, in whichever order they come."""

    def __init__(self, max_items: int = 100) -> None:
        self.max_items = max_items  # items per skip record
        self.last: dict[str, Mapping[str, Any]] = {}  # user -> their latest event
        self.shown: dict[str, Sequence[str]] = {}  # event id -> list, next event unknown
        self.waiting: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}

    def on_event(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The user's next event is known: feedback on their previous list if it came."""
        user = str(event["user_id"])
        previous = self.last.get(user)
        self.last[user] = event
        if previous is None:
            return []
        shown = self.shown.pop(str(previous["event_id"]), None)
        if shown is None:
            self.waiting[str(previous["event_id"])] = (previous, event)
            return []
        return simulated_feedback(previous, shown, event, self.max_items)

    def on_recommendation(self, event_id: str, items: Sequence[str]) -> list[dict[str, Any]]:
        """A list arrived: feedback on it if the user's next event is already known."""
        pair = self.waiting.pop(event_id, None)
        if pair is None:
            self.shown[event_id] = items
            return []
        return simulated_feedback(pair[0], items, pair[1], self.max_items)
