"""One YAML file validated into typed objects; errors name the key, the bad value and the fix."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gearshift.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """USD per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


class Timeouts(_Strict):
    """Seconds. `read` bounds the whole answer of a non-streamed call and the gap between chunks of a stream."""

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=120.0, gt=0)


class BreakerConfig(_Strict):
    """A model's circuit breaker: after `failures` consecutive failed calls it is skipped (its
    fallbacks serve at once) for `open_seconds`, then one trial call decides."""

    failures: int = Field(default=5, ge=0, description="consecutive failed calls that open it; 0 turns it off")
    open_seconds: float = Field(default=30.0, gt=0, description="how long it stays open before a trial call")


class ReplaySource(_Strict):
    """Where a `replay` model's recorded answers come from."""

    dataset: str = Field(description="routellm/gsm8k, routellm/mmlu, routerbench/<task>, or a path to an outcomes file")
    column: str = Field(description="the model's column in that dataset")
    latency_ms: float = Field(default=0.0, ge=0, description="simulated latency of each answer")


class ModelConfig(_Strict):
    """One upstream deployment the gateway may call."""

    name: str = ""
    provider: str = Field(description="the adapter: a kind of gearshift.providers (openai, anthropic, replay)")
    upstream_id: str = ""
    base_url: str = ""
    api_key_env: str | None = None
    price: Price
    rank: int = Field(default=0, description="capability rank: higher is more capable")
    context_window: int = Field(default=128_000, gt=0)
    timeout: Timeouts = Timeouts()
    retries: int = Field(default=2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict)
    replay: ReplaySource | None = None
    breaker: BreakerConfig = BreakerConfig()
    forward_metadata: bool = Field(default=False, description="forward the request's `metadata` object (less "
                                   "gearshift's routing keys) to the upstream; OpenAI refuses it without `store`")
    drop_params: bool = Field(default=False, description="drop or clamp parameters the upstream cannot take "
                              "(named in x-gearshift-dropped-params) instead of answering 400")
    api: Literal["chat", "responses"] = Field(
        default="chat", description="the upstream API for requests that came in on /v1/responses: `chat` "
        "(translated to chat completions, any server) or `responses` (sent as they are to its /responses: "
        "OpenAI's own models; provider openai only). Chat-completions requests use chat completions either way")

    # The provider kind, its needs and its default base_url are checked by gearshift.plan, which
    # knows the provider classes; config stays the bottom layer.
    @model_validator(mode="after")
    def _base_url(self) -> ModelConfig:
        if self.base_url and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https://")
        return self

    def api_key(self) -> str | None:
        """The key from the environment, read when used so it is never stored in config objects."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ResolveConfig(_Strict):
    """Resolve a sample of the shadow pairs that disagree: a capable judge grades both answers, so a
    disagreement where the reference was wrong is not counted as a loss (store.view.PairEstimate)."""

    judge: str = Field(description="model that grades both answers of a disagreement (at least as capable as the "
                       "reference)")
    rate: float = Field(default=0.2, gt=0, le=1, description="share of disagreements resolved, drawn at random "
                        "(so the resolved ones stand for all)")


class ShadowConfig(_Strict):
    """Shadow routing: after the client has its answer, a sample also goes to the reference model."""

    rate: float = Field(ge=0, le=1, description="share of requests shadowed")
    observe_rate: float | None = Field(
        default=None, ge=0, le=1, description="share shadowed while the router observes (default: rate). The "
        "client then has the reference's answer, so a pair costs one call to `explore`: a higher rate here proves "
        "the router in fewer requests for the same shadow spend")
    reference: str | None = Field(default=None, description="the reference model (default: the highest-ranked)")
    when: dict[str, Any] | None = Field(default=None, description="only requests matching these rule conditions")
    daily_budget_usd: float | None = Field(default=None, ge=0, description="stop shadowing for the UTC day past this")
    judge: str | None = Field(default=None, description="model that compares free-text pairs (pairwise)")
    allow_weak_judge: bool = False
    compare: Literal["auto", "final_answer", "json", "tool_call", "judge", "recorded"] = Field(
        default="auto", description="how pairs are scored: auto detects structured output, else the judge; "
        "recorded: from the recorded quality of `replay` models (demos, the lab's simulation)")
    explore: str | None = Field(
        default=None, description="when the answer came from the reference, shadow this (cheaper) model instead, "
        "so pairs cover the whole score range, not only the requests routed cheap")
    resolve: ResolveConfig | None = Field(
        default=None, description="resolve a random sample of the pairs scored by agreement (final_answer, json, "
        "tool_call) that disagree with a judge; without it, quality from agreement is a lower bound")


class RecalibrateConfig(_Strict):
    """Refit a scoring router's threshold on recent shadow pairs, on a schedule inside the server."""

    floor: float = Field(gt=0, le=1, description="quality retained to keep, e.g. 0.95")
    every_hours: float = Field(default=24.0, gt=0)
    window_hours: float = Field(default=168.0, gt=0, description="pairs from this many recent hours")
    min_pairs: int = Field(default=200, ge=10)
    auto_apply: bool = Field(default=False, description="promote each new version at once (else an operator runs "
                             "`gearshift routers promote`)")


class CacheConfig(_Strict):
    """An exact-match response cache for one router: a request identical to one answered before (same
    router, API, messages and answer-changing parameters) is answered from the cache, without an upstream call."""

    ttl_seconds: float = Field(default=3600.0, gt=0, description="how long an answer stays in the cache")
    max_entries: int = Field(default=10_000, gt=0, description="answers kept for this router; the least recently "
                             "used go first (shared: the oldest written)")
    shared: bool = Field(default=False, description="keep the answers in the store (every process and replica "
                         "sharing it hits them) instead of in this process's memory")
    any_temperature: bool = Field(default=False, description="also cache requests sampled at temperature > 0 (or "
                                  "with no temperature: the upstream's default, 1): repeats then get the same "
                                  "answer instead of a new sample")


class OnBudget(_Strict):
    """Route by another router once the key's or its team's day or month budget is this much used."""

    at: float = Field(gt=0, le=1, description="share of the budget used, e.g. 0.8")
    router: str = Field(description="the (cheaper) router that serves from then on, e.g. gearshift/cheap")


class RouterConfig(BaseModel):
    """A router's settings; `kind` picks the class, which validates the rest (see gearshift.plan)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str
    fallbacks: list[str] = Field(default_factory=list)
    shadow: ShadowConfig | None = None
    recalibrate: RecalibrateConfig | None = None
    cache: CacheConfig | None = None
    on_budget: OnBudget | None = None

    def options(self) -> dict[str, Any]:
        """The kind-specific keys."""
        return dict(self.model_extra or {})


class Limits(_Strict):
    """Per-minute rate limits and USD budgets of a key or a team; an absent one is no limit."""

    rpm: int | None = Field(default=None, gt=0, description="requests per minute")
    tpm: int | None = Field(default=None, gt=0, description="tokens (input and output) per minute")
    usd_day: float | None = Field(default=None, ge=0, description="spend per UTC day, in USD")
    usd_month: float | None = Field(default=None, ge=0, description="spend per UTC calendar month, in USD")


class TeamConfig(_Strict):
    """A team that keys belong to: its limits hold for all of its keys together."""

    limits: Limits | None = None


class ClientKey(_Strict):
    """A bearer key clients present. Give `key_env` (preferred) or `key`."""

    name: str
    key: str | None = None
    key_env: str | None = None
    admin: bool = Field(default=False, description="may write feedback on any request's trace, not only its own")
    team: str | None = Field(default=None, description="the team the key's spend counts to (one of `teams`)")
    routers: list[str] | None = Field(default=None, description="the routers this key may name (default: any)")
    models: list[str] | None = Field(default=None, description="the models this key may name directly "
                                     "(default: any)")
    limits: Limits | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ClientKey:
        if (self.key is None) == (self.key_env is None):
            raise ValueError("give exactly one of `key` or `key_env`")
        return self

    def secret(self) -> str | None:
        return self.key if self.key is not None else os.environ.get(self.key_env or "")


class StoreConfig(_Strict):
    url: str = "sqlite:///gearshift.db"
    queue_size: int = Field(default=100_000, gt=0, description="traces held in memory while the store is slow "
                            "or down; beyond it new traces are dropped (counted)")
    batch_size: int = Field(default=500, gt=0)
    flush_interval: float = Field(default=0.2, gt=0)
    writer: Literal["process", "thread"] = Field(default="process", description="who writes traces to the "
                                                 "store: a child process (the default: traces handed to it survive "
                                                 "the gateway being killed) or a thread of the gateway's process "
                                                 "(where starting a process is not allowed)")
    record_content: bool = Field(default=True, description="keep prompt and answer text (needed for shadow pairs)")
    max_answer_chars: int = Field(default=100_000, gt=0, description="answers are stored up to this many "
                                  "characters, the rest cut and the row marked truncated")
    retention_days: float | None = Field(default=None, gt=0, description="delete traces and feedback older than "
                                         "this (checked hourly by the gateway); default: keep everything")
    spill_path: str | None = Field(default="gearshift-spill", description="where traces the store could not take "
                                   "at shutdown are kept (files PATH.PID.jsonl, relative to the config file), "
                                   "to be written at the next start; null: keep none (they are lost, and counted)")
    password_env: str | None = Field(default=None, description="environment variable holding the PostgreSQL "
                                     "password (keeps it out of the config file)")

    def password(self) -> str | None:
        """The password from the environment, read when used so it is never stored in config objects."""
        return os.environ.get(self.password_env) if self.password_env else None

    def scheme(self) -> str:
        """The URL's scheme, which names the store kind (checked by gearshift.plan)."""
        return self.url.split("://", 1)[0] if "://" in self.url else ""


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    open: bool = Field(default=False, description="serve without client keys: anyone who can reach the port may "
                       "use the gateway (and spend). Without it, `client_keys` are required")
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    default_router: str | None = Field(default=None, description="router used when `model` is empty")
    shadow_queue_size: int = Field(default=1000, ge=1, description="shadow work waiting; beyond it work is dropped")
    shadow_workers: int = Field(default=4, ge=1, le=256)
    version_poll_seconds: float = Field(default=10.0, gt=0, description="how often promoted router versions are read")
    shadow_spend_sync_seconds: float = Field(default=15.0, gt=0, description="with a shared store (PostgreSQL, or "
                                             "several workers): how often the others' shadow spend is read, "
                                             "for the daily budgets")
    limits_sync_seconds: float = Field(default=1.0, gt=0, description="how often rate-limit and budget counters "
                                       "are exchanged with the store (other replicas count too): replicas "
                                       "together overshoot a limit by at most what they admit in this time")
    ready_max_pending_traces: int = Field(default=10_000, ge=1, description="/health/ready answers 503 while more "
                                          "traces than this wait for the store (down or too slow): a load "
                                          "balancer then sends new traffic to replicas that can keep them")
    watch_config_seconds: float | None = Field(default=None, gt=0, description="reload the config file when it "
                                               "changes, checked this often (SIGHUP reloads it at any time)")
    log_format: Literal["text", "json"] = Field(default="text", description="`json`: one JSON object per log line "
                                                "(timestamp, level, logger, message, trace_id, request fields)")
    access_log_sample: float = Field(default=0.0, ge=0, le=1, description="share of requests logged as one access "
                                     "line each (method, path, status, latency, router, model, trace id)")
    workers: int = Field(default=1, ge=1, le=64, description="processes serving the port (one core each); they "
                         "share the store like replicas")
    metrics_key_env: str | None = Field(default=None, description="environment variable holding the key that "
                                        "/metrics and the detailed /health require (`Authorization: Bearer`); "
                                        "unset: both are open, as for a scraper on a private network")
    key_secret_env: str | None = Field(default=None, description="environment variable holding the server secret "
                                       "(32+ characters) that virtual keys are hashed with (HMAC-SHA-256); set, it "
                                       "enables virtual keys (`gearshift keys`, `/admin/keys`)")
    key_cache_seconds: float = Field(default=30.0, gt=0, le=3600, description="how long a replica trusts a virtual "
                                     "key it looked up (and a wrong key it did not find): a revoked key is refused "
                                     "at every replica within this")
    ui_secure_cookie: Literal["auto", "always"] = Field(
        default="auto", description="when the dashboard's session cookie is `Secure` (the browser sends it over "
        "HTTPS only): `auto` when the sign-in reached this process over HTTPS; `always` behind a proxy that ends "
        "TLS (browsers reach it by HTTPS, it forwards plain HTTP)")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="a connection whose request head has not "
                                          "arrived within this is closed (slow-header clients)")
    max_connections_per_client: int = Field(default=256, ge=1, description="open connections one client IP may hold; "
                                            "beyond it new ones are closed at once")


class WatchBounds(_Strict):
    """How far a window may move from the baseline before it is drift. `null` turns a check off."""

    escalation_rate: float | None = Field(default=0.10, ge=0, le=1, description="absolute change, either way")
    gate_pass_rate: float | None = Field(default=0.10, ge=0, le=1, description="absolute change, either way")
    strong_share: float | None = Field(default=0.10, ge=0, le=1,
                                       description="absolute change in the share answered by the reference model")
    shadow_agreement_drop: float | None = Field(default=0.05, ge=0, le=1, description="absolute drop")
    spend_ratio_increase: float | None = Field(default=0.10, ge=0,
                                               description="absolute rise of spend / always-reference spend")
    latency_p95_ratio: float | None = Field(default=1.5, gt=0, description="window p95 / baseline p95 above this")
    error_rate_increase: float | None = Field(default=0.02, ge=0, le=1, description="absolute rise of 5xx share")
    psi: float | None = Field(default=0.25, gt=0,
                              description="population stability index of prompt length and router score")


class WatchConfig(_Strict):
    """Online monitoring of recent traces against a baseline (see gearshift.watch)."""

    enabled: bool = Field(default=False, description="run the check loop inside `gearshift serve`")
    baseline: str | None = Field(default=None, description="baseline JSON (relative to the config file); "
                                 "default: the oldest `window_requests` traces in the store")
    window_requests: int = Field(default=500, ge=1, description="the most recent N traces form the window")
    window_seconds: float | None = Field(default=None, gt=0, description="and only those newer than this")
    min_requests: int = Field(default=100, ge=1, description="judge no rate on fewer requests than this")
    min_shadow_pairs: int = Field(default=30, ge=1, description="judge shadow agreement on no fewer pairs")
    interval_seconds: float = Field(default=60.0, gt=0, description="seconds between checks in the server")
    router: str | None = Field(default=None, description="watch only this router's traces (default: all)")
    reference: str | None = Field(default=None, description="the always-expensive model (default: highest-ranked)")
    quality_floor: float | None = Field(default=None, ge=0, le=1,
                                        description="alert when quality retained's lower bound is below this")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="two-sided level of the quality interval")
    psi_bins: int = Field(default=10, ge=2, le=100)
    psi_false_alarm: float = Field(default=0.001, gt=0, lt=0.5,
                                   description="the PSI bound is raised to what sampling noise alone exceeds "
                                   "this often (simulated; see benchmarks/psi_bounds.py)")
    webhook_url: str | None = Field(default=None, description="POST alerts here as JSON")
    webhook_url_env: str | None = Field(default=None, description="or read the URL from this variable "
                                        "(for URLs that carry a token)")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    bounds: WatchBounds = WatchBounds()

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("webhook_url must start with http:// or https://")
        return v


class Config(_Strict):
    models: dict[str, ModelConfig]
    routers: dict[str, RouterConfig] = Field(default_factory=dict)
    client_keys: list[ClientKey] = Field(default_factory=list)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    store: StoreConfig = StoreConfig()
    server: ServerConfig = ServerConfig()
    watch: WatchConfig = WatchConfig()
    # Paths in the file (replay datasets, artifacts) are relative to the file's folder.
    base_dir: str = "."

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            models = {}
            for name, m in data["models"].items():
                if isinstance(m, dict):
                    m = {**m, "name": name}
                    m.setdefault("upstream_id", name)
                models[name] = m
            data = {**data, "models": models}
        return data

    @model_validator(mode="after")
    def _references(self) -> Config:
        if not self.models:
            raise ValueError("`models` is empty: configure at least one model")
        for rname, r in self.routers.items():
            for i, fb in enumerate(r.fallbacks):
                if fb not in self.models:
                    raise _KeyProblem(f"routers.{rname}.fallbacks.{i}", fb, f"one of the models: {sorted(self.models)}")
            if rname in self.models:
                raise _KeyProblem(f"routers.{rname}", rname, "a router name that is not also a model name")
            sh = r.shadow
            for key in ("reference", "judge", "explore"):
                value = getattr(sh, key) if sh else None
                if value is not None and value not in self.models:
                    raise _KeyProblem(f"routers.{rname}.shadow.{key}", value, f"one of the models: {sorted(self.models)}")
            if sh and sh.resolve and sh.resolve.judge not in self.models:
                raise _KeyProblem(f"routers.{rname}.shadow.resolve.judge", sh.resolve.judge,
                                  f"one of the models: {sorted(self.models)}")
        for i, k in enumerate(self.client_keys):
            if k.team is not None and k.team not in self.teams:
                raise _KeyProblem(f"client_keys.{i}.team", k.team, f"one of the teams: {sorted(self.teams)} "
                                  "(add it under `teams:`)")
            for j, name in enumerate(k.routers or ()):
                if name not in self.routers:
                    raise _KeyProblem(f"client_keys.{i}.routers.{j}", name, f"one of the routers: {sorted(self.routers)}")
            for j, name in enumerate(k.models or ()):
                if name not in self.models:
                    raise _KeyProblem(f"client_keys.{i}.models.{j}", name, f"one of the models: {sorted(self.models)}")
        if self.server.default_router and self.server.default_router not in self.routers:
            raise _KeyProblem("server.default_router", self.server.default_router, f"one of {sorted(self.routers)}")
        if self.watch.reference is not None and self.watch.reference not in self.models:
            raise _KeyProblem("watch.reference", self.watch.reference, f"one of the models: {sorted(self.models)}")
        return self

    def model(self, name: str) -> ModelConfig:
        return self.models[name]

    def strongest(self) -> str:
        """The highest-ranked model: the always-expensive counterfactual."""
        return max(self.models.values(), key=lambda m: (m.rank, m.price.output, m.price.input)).name


class _KeyProblem(ValueError):
    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}: bad value {value!r}; allowed: {allowed}")
        self.key = key


def error_lines(err: ValidationError, prefix: str = "", unknown: str = "unknown key; remove it or check its spelling") -> list[str]:
    """One line per validation error: `  prefix.key: what is wrong (got value)`.

    The one formatter for config, router options and gate options, so every bad key reads alike."""
    lines = []
    for e in err.errors():
        if isinstance(e.get("ctx", {}).get("error"), _KeyProblem):
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")  # already names key, value and fix
            continue
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        key = ".".join(part for part in (prefix, loc) if part) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown
        elif e["type"] == "missing":
            msg = "required key is missing"
        value = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return lines


def _format_validation(err: ValidationError, source: str) -> str:
    n = err.error_count()
    return "\n".join([f"{source}: invalid config ({n} problem{'s' if n > 1 else ''})", *error_lines(err)])


def parse_config(data: Any, source: str = "<config>", base_dir: str | Path = ".") -> Config:
    """Validate a parsed YAML document's shape; raise ConfigError naming each bad key.

    Kind-specific parts (router options, providers, store kinds) are checked by gearshift.plan."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `models:` (and `routers:`, ...)")
    data = {**data, "base_dir": str(base_dir)}
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, source)) from None
    return config


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML document of a config file; ConfigError when unreadable or not YAML."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return data


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file's shape (gearshift.plan.load checks and builds the rest)."""
    p = Path(path)
    return parse_config(read_yaml(p), source=str(p), base_dir=p.resolve().parent)
