"""Optional encoders: an OpenAI-compatible /v1/embeddings endpoint on 127.0.0.1 feeds the classifier."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from gearshift.errors import ConfigError
from gearshift.lab.replay import requests
from gearshift.lab.train import TrainSettings, fit, model_of, pair_scores
from gearshift.learned import artifact
from gearshift.learned.encoders import EncoderError, OpenAIEmbeddingsEncoder, make_encoder
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.plan import build_routers
from tests.support.configs import parse_config

KEY = "sk-embed-SECRET-42"
DIM = 6


def fake_vector(text: str) -> list[float]:
    """A deterministic 'embedding': a few surface statistics of the text."""
    return [len(text) / 100, sum(c.isdigit() for c in text) / 10, text.count(" ") / 20, text.count("?"),
            float("how many" in text), 1.0]


class Embeddings(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Embeddings.seen_auth.append(self.headers.get("authorization", ""))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        out = {"object": "list", "model": body["model"],
               "data": [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(texts)]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GS_TEST_EMBED_KEY", KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_embeddings_encoder_trains_and_serves(endpoint: str, tmp_path: Path, data_dir: Path) -> None:
    settings = {"kind": "openai", "base_url": endpoint, "model": "fake-embed", "api_key_env": "GS_TEST_EMBED_KEY"}
    enc = make_encoder(settings)
    assert isinstance(enc, OpenAIEmbeddingsEncoder) and enc.dim == DIM and enc.remote
    assert Embeddings.seen_auth[-1] == f"Bearer {KEY}"
    assert KEY not in json.dumps(enc.describe())

    o = datasets.load("routellm/gsm8k", drop_contaminated=True)
    train, test = o.subset(np.arange(300)), o.subset(np.arange(300, 340))
    a = fit(train, TrainSettings(features=FeatureSpec(word_bits=12)), encoder=enc)
    assert a.header["encoder"] == {"kind": "openai", "model": "fake-embed", "dim": DIM}
    path = artifact.save(a, tmp_path / "enc.json")
    offline = pair_scores(model_of(a, enc), test)

    models = {"mixtral": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": W},
                          "price": {"input": 0.6, "output": 0.6}},
              "gpt-4": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": S},
                        "price": {"input": 10, "output": 30}}}
    cfg = parse_config({"models": models, "routers": {"r": {"kind": "classifier", "artifact": path.name,
                                                             "encoder": {**settings, "dim": DIM}}}}, base_dir=tmp_path)
    router = build_routers(cfg)["r"]
    served = np.array([router.score(r) for r in requests(test)])  # one remote call per request
    np.testing.assert_allclose(served, offline, rtol=0, atol=1e-12)
    # The artifact needs its encoder: configured without one (or with another), it is refused.
    with pytest.raises(ConfigError, match="trained with encoder"):
        parse_config({"models": models, "routers": {"r": {"kind": "classifier", "artifact": path.name}}},
                     base_dir=tmp_path)


def test_encoder_errors_are_clear_and_keep_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_EMBED_KEY", KEY)
    with pytest.raises(EncoderError, match="unreachable") as err:
        OpenAIEmbeddingsEncoder("http://127.0.0.1:9/v1", "m", api_key_env="GS_TEST_EMBED_KEY", timeout=2)
    assert KEY not in str(err.value)
    with pytest.raises(EncoderError, match="unknown; allowed"):
        make_encoder({"kind": "word2vec"})
    assert make_encoder(None) is None and make_encoder({"kind": "none"}) is None
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(EncoderError, match="pip install sentence-transformers"):
            make_encoder({"kind": "sentence-transformers", "model": "all-MiniLM-L6-v2"})
