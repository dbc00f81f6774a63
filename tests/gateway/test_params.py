"""No silent parameter changes: what an Anthropic model cannot take is a 400 naming it, or with
`drop_params: true` dropped and named in x-gearshift-dropped-params. The official openai SDK through
the gateway to an Anthropic model on the fake upstream."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from gearshift.config import Config
from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

HI = [{"role": "user", "content": "hi"}]


pytestmark = pytest.mark.usefixtures("upstream_key")


def config(upstream: FakeUpstream, tmp_path: Path, drop: bool) -> Config:
    cfg = gateway_config(upstream.url, tmp_path)
    cfg.models["claude"] = cfg.models["claude"].model_copy(update={"drop_params": drop})
    return cfg


def client(gw) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=2)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"logprobs": True}, "logprobs"), ({"seed": 7}, "seed"), ({"temperature": 1.5}, "temperature"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"), ({"stop": [" "]}, "stop")])
def test_an_unsupported_parameter_is_a_400_that_names_it(upstream: FakeUpstream, tmp_path: Path,
                                                         kwargs: dict, param: str) -> None:
    with running(config(upstream, tmp_path, drop=False)) as gw, pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(model="claude", messages=HI, **kwargs)
    assert info.value.param == param and param in info.value.message
    assert info.value.code == "unsupported_parameter" and "drop_params" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert upstream.count() == 0  # refused before any upstream call, and the SDK did not retry


def test_openai_defaults_are_not_a_use_of_the_parameter(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(config(upstream, tmp_path, drop=False)) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="claude", messages=HI, logprobs=False, presence_penalty=0, temperature=0.7, n=1)
    assert raw.parse().choices[0].message.content == "echo: hi"
    assert "x-gearshift-dropped-params" not in raw.headers
    assert upstream.requests[-1].json["temperature"] == 0.7


def test_drop_params_drops_clamps_and_says_so(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(config(upstream, tmp_path, drop=True)) as gw:
        c = client(gw)
        raw = c.chat.completions.with_raw_response.create(
            model="claude", messages=HI, logprobs=True, seed=7, temperature=1.5)
        assert raw.parse().choices[0].message.content == "echo: hi"
        assert raw.headers["x-gearshift-dropped-params"] == "logprobs,seed,temperature"
        sent = upstream.requests[-1].json
        assert sent["temperature"] == 1.0 and "logprobs" not in sent and "seed" not in sent
        streamed = c.chat.completions.with_raw_response.create(model="claude", messages=HI, seed=7, stream=True)
        assert streamed.headers["x-gearshift-dropped-params"] == "seed"
        assert "".join(ch.choices[0].delta.content or "" for ch in streamed.parse() if ch.choices) == "echo: hi"
        # An OpenAI model forwards the parameters as they are: nothing dropped, no header.
        raw = c.chat.completions.with_raw_response.create(model="small", messages=HI, seed=7, temperature=1.5)
        assert "x-gearshift-dropped-params" not in raw.headers
        assert upstream.requests[-1].json["seed"] == 7 and upstream.requests[-1].json["temperature"] == 1.5
