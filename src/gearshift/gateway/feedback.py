"""Feedback from the application about an answer: thumbs, a rating, or a score, normalised to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gearshift.errors import BadRequest

THUMBS = {"up": 1.0, "down": 0.0, "1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0}


@dataclass(frozen=True)
class Feedback:
    trace_id: str
    score: float
    label: str | None = None
    source: str | None = None
    comment: str | None = None


def parse_feedback(body: Any) -> Feedback:
    """Validate a feedback body; exactly one of `score` (0..1), `thumbs` (up/down) or `rating` (1..scale)."""
    if not isinstance(body, dict):
        raise BadRequest("feedback body must be a JSON object")
    trace_id = body.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        raise BadRequest("`trace_id` (from the x-gearshift-trace-id header) is required", param="trace_id")
    given = [k for k in ("score", "thumbs", "rating") if k in body]
    if len(given) != 1:
        raise BadRequest("give exactly one of `score` (0..1), `thumbs` (up/down) or `rating` (with `scale`)",
                         param="score")
    label: str | None = None
    if "score" in body:
        score = body["score"]
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise BadRequest(f"`score` must be a number in [0, 1], got {score!r}", param="score")
        value = float(score)
    elif "thumbs" in body:
        label = str(body["thumbs"]).lower()
        if label not in THUMBS:
            raise BadRequest(f"`thumbs` must be up or down, got {body['thumbs']!r}", param="thumbs")
        value = THUMBS[label]
    else:
        rating, scale = body["rating"], body.get("scale", 5)
        if (isinstance(rating, bool) or not isinstance(rating, int | float) or isinstance(scale, bool)
                or not isinstance(scale, int | float) or scale <= 1 or not 1 <= rating <= scale):
            raise BadRequest(f"`rating` must be in 1..scale (scale {scale!r}), got {rating!r}", param="rating")
        value = (float(rating) - 1) / (float(scale) - 1)
        label = f"{rating}/{scale}"
    for key in ("source", "comment"):
        if key in body and not isinstance(body[key], str):
            raise BadRequest(f"`{key}` must be a string", param=key)
    return Feedback(trace_id, value, label, body.get("source"), body.get("comment"))
