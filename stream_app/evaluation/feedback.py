"""Feedback simulated from a rating log: what a user shown a list would have done.

The user's next rating decides: a click on that item when the list held it, a skip
for every other item shown. Sent at the time of that next rating (no earlier).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from stream_app.contract import recommendation_id


def simulated_feedback(previous: Mapping[str, Any], shown: Sequence[str],
                       chosen: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Feedback on the list shown after ``previous`` once the user made ``chosen``."""
    user = str(chosen["user_id"])
    rec_id = recommendation_id(user, str(previous["event_id"]))
    target = str(chosen["item_id"])
    return [{"user_id": user, "item_id": item, "type": "click" if item == target else "skip",
             "recommendation_id": rec_id, "ts": chosen["ts"]} for item in shown]


class FeedbackSimulator:
    """Remembers each user's last event so their next one can answer the list it got."""

    def __init__(self) -> None:
        self.last: dict[str, Mapping[str, Any]] = {}

    def answer(self, events: Sequence[Mapping[str, Any]],
               recs: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
        """Feedback for the lists these events answer, in event order."""
        out: list[dict[str, Any]] = []
        for event in events:
            user = str(event["user_id"])
            previous = self.last.get(user)
            if previous is not None and previous["event_id"] in recs:
                out += simulated_feedback(previous, recs[previous["event_id"]], event)
            self.last[user] = event
        return out
