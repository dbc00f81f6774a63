"""Provider adapters: one module per upstream API, all speaking OpenAI's format to the gateway.

Adding a provider means adding a module with a Provider subclass that sets `kind` (PROVIDERS finds it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gearshift.providers.anthropic import AnthropicProvider
from gearshift.providers.base import Completion, Provider, Stream, Usage
from gearshift.providers.openai_compat import OpenAICompatProvider
from gearshift.providers.recorded import ReplayProvider
from gearshift.registry import Registry

if TYPE_CHECKING:
    import aiohttp

    from gearshift.config import ModelConfig

PROVIDERS: Registry[Provider] = Registry("gearshift.providers", Provider, "provider")


def build_provider(model: ModelConfig, session: aiohttp.ClientSession | None, base_dir: str = ".") -> Provider:
    """The provider for one configured model, sharing the gateway's pooled session."""
    cls = PROVIDERS.resolve(model.provider, f"models.{model.name}.provider")
    return cls(model, session, base_dir)


__all__ = ["PROVIDERS", "AnthropicProvider", "Completion", "OpenAICompatProvider", "Provider", "ReplayProvider",
           "Stream", "Usage", "build_provider"]
