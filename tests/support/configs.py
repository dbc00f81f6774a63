"""Configs checked the way every command and the gateway check them: through gearshift.plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gearshift import plan
from gearshift.config import Config


def parse_config(data: Any, source: str = "<config>", base_dir: str | Path = ".") -> Config:
    """A parsed YAML document, validated and built (router options, kinds, shadow); its Config."""
    return plan.parse(data, source, base_dir).config


def load_config(path: str | Path) -> Config:
    """A config file, validated and built; its Config."""
    return plan.load(path).config
