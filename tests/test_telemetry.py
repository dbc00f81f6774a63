"""When tracing is on (the standard OTEL_* variables), what it refuses, and what it costs when off."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gearshift import telemetry
from gearshift.cli import main
from gearshift.errors import ConfigError
from gearshift.providers.http import traced

GRPC = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_SERVICE_NAME": "gw"}, False),  # a name alone asks for nothing
])
def test_tracing_is_on_only_with_an_endpoint_and_nothing_turning_it_off(env: dict[str, str], on: bool) -> None:
    assert telemetry.wanted(env) is on
    assert (telemetry.check(env) is not None) is on


def test_the_endpoint_and_protocol_are_read_as_the_exporter_reads_them() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}
    assert telemetry.check(base) == "OTLP http/protobuf to http://c:4318/v1/traces"
    traces = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9/x"}
    assert telemetry.endpoint(traces) == "http://t:9/x"
    assert telemetry.protocol({**base, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == "grpc"
    # The traces variable wins over the general one.
    assert telemetry.protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                               "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}) == "http/protobuf"
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL=http/json: .*fix: set"):
        telemetry.check({**base, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_grpc_without_its_exporter_is_one_line_naming_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, GRPC, None)  # as if not installed
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    with pytest.raises(ConfigError) as e:
        telemetry.check(env)
    assert str(e.value) == ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc: the OTLP grpc exporter is not installed; "
                            "fix: pip install 'gearshift[otel]' opentelemetry-exporter-otlp-proto-grpc")


def test_asked_for_without_the_sdk_the_start_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set but the OpenTelemetry SDK "
                                          r"is not installed; fix: pip install 'gearshift\[otel\]'"):
        telemetry.check(env)
    # `check-config` (and `serve`, through the same door) refuses it with that line and exit 2.
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"models": {"m": {"provider": "openai", "upstream_id": "m", "rank": 1,
                                                       "base_url": "http://127.0.0.1:9/v1"}},
                                      "routers": {"r": {"kind": "fixed", "model": "m"}}, "server": {"open": True}}))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = CliRunner().invoke(main, ["check-config", str(config)])
    assert out.exit_code == 2
    assert "OpenTelemetry SDK is not installed; fix: pip install 'gearshift[otel]'" in out.output


def test_off_nothing_is_started_and_upstream_headers_are_passed_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in telemetry.ENDPOINT_VARS:
        monkeypatch.delenv(name, raising=False)
    assert telemetry.start() is False
    assert telemetry.tracer is None
    headers = {"Content-Type": "application/json"}
    assert traced(headers) is headers  # not even a copy
    assert telemetry.open_request({}, "POST", "/v1/chat/completions", "chat") is None
    assert telemetry.parent() is None


def test_model_attributes_name_the_api_model_and_host_but_no_path() -> None:
    assert telemetry.model_attributes("anthropic", "claude-x", "https://api.anthropic.com/v1?key=secret") == {
        "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-x",
        "server.address": "api.anthropic.com", "server.port": 443}
    assert telemetry.model_attributes("openai", "m", "http://10.0.0.2:8000/v1")["server.port"] == 8000
    assert telemetry.model_attributes("replay", "m", None) == {"gen_ai.provider.name": "replay",
                                                               "gen_ai.request.model": "m"}
