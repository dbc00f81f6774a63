"""Static routers: fixed, random (weighted, deterministic per prompt), rules (first match wins)."""

from __future__ import annotations

import numpy as np

from gearshift.plan import build_routers
from gearshift.request import ChatRequest
from tests.support.configs import parse_config

MODELS = {
    "small": {"provider": "openai", "price": {"input": 0.1, "output": 0.4}, "rank": 1},
    "large": {"provider": "openai", "price": {"input": 2.5, "output": 10}, "rank": 9},
}


def routers(spec: dict) -> dict:
    return build_routers(parse_config({"models": MODELS, "routers": spec}))


def test_fixed_router_with_fallbacks() -> None:
    r = routers({"always": {"kind": "fixed", "model": "small", "fallbacks": ["large", "small"]}})["always"]
    route = r.route(ChatRequest.from_prompt("hi"))
    assert route.primary == "small"
    assert route.steps[0].fallbacks == ("large",)  # a model is never its own fallback
    assert route.router == "always"


def test_random_router_follows_weights_and_is_deterministic() -> None:
    r = routers({"rnd": {"kind": "random", "weights": {"small": 3, "large": 1}, "seed": 7}})["rnd"]
    picks = [r.route(ChatRequest.from_prompt(f"prompt {i}")).primary for i in range(4000)]
    share = picks.count("large") / len(picks)
    assert 0.22 < share < 0.28
    again = [r.route(ChatRequest.from_prompt(f"prompt {i}")).primary for i in range(200)]
    assert again == picks[:200]
    # As a scoring router, route() agrees with score() >= threshold.
    reqs = [ChatRequest.from_prompt(f"prompt {i}") for i in range(500)]
    strong = r.scores(reqs) >= r.threshold
    assert np.array_equal(strong, np.array([r.route(q).primary == "large" for q in reqs]))


RULES = {
    "auto": {
        "kind": "rules",
        "default": "small",
        "rules": [
            {"name": "vip", "when": {"metadata": {"tier": ["pro", "enterprise"]}}, "model": "large"},
            {"name": "long", "when": {"min_tokens": 50}, "model": "large"},
            {"name": "code", "when": {"keywords": ["traceback", "refactor"], "scope": "last_user"}, "model": "large"},
            {"name": "sql", "when": {"regex": r"(?i)\bselect\b.+\bfrom\b"}, "model": "large"},
            {"name": "json", "when": {"json_output": True}, "model": "large"},
            {"name": "tools", "when": {"tools": True, "max_tokens": 10}, "model": "small"},
        ],
    }
}


def test_rules_first_match_wins_and_default() -> None:
    r = routers(RULES)["auto"]
    q = ChatRequest.from_prompt
    assert r.route(q("hello")).primary == "small"
    assert "default" in r.route(q("hello")).reason
    vip = r.route(q("hello", {"tier": "pro"}))
    assert vip.primary == "large" and "vip" in vip.reason and "tier=pro" in vip.reason
    assert r.route(q("hello", {"tier": "free"})).primary == "small"
    long = r.route(q("word " * 60))
    assert long.primary == "large" and "estimate" in long.reason
    assert r.route(q("I got a Traceback here")).primary == "large"
    assert r.route(q("tracebacks")).primary == "small"  # keywords match whole words
    assert r.route(q("SELECT name FROM users")).primary == "large"


def test_rules_scope_and_structure() -> None:
    r = routers(RULES)["auto"]
    earlier = ChatRequest(body={"messages": [
        {"role": "user", "content": "refactor this"}, {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"}]})
    assert r.route(earlier).primary == "small"  # keyword only in an earlier turn; scope is last_user
    js = ChatRequest(body={"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})
    assert r.route(js).primary == "large"


def test_metadata_from_headers_wins_over_body() -> None:
    req = ChatRequest.from_http({"messages": [{"role": "user", "content": "x"}], "metadata": {"tier": "free"}},
                                {"X-Gearshift-Tier": "enterprise", "Authorization": "Bearer k"})
    assert req.metadata == {"tier": "enterprise"}
    assert routers(RULES)["auto"].route(req).primary == "large"


def test_estimated_tokens_counts_content_parts() -> None:
    req = ChatRequest(body={"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 400},
                                                                        {"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert 100 <= req.estimated_tokens() <= 110
