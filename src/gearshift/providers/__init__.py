"""Provider adapters: one module per upstream API, all speaking OpenAI's format to the gateway.

Adding a provider means adding a module and one line in PROVIDERS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gearshift.errors import ConfigError
from gearshift.providers.anthropic import AnthropicProvider
from gearshift.providers.base import Completion, Provider, Stream, Usage
from gearshift.providers.openai_compat import OpenAICompatProvider
from gearshift.providers.recorded import ReplayProvider

if TYPE_CHECKING:
    import aiohttp

    from gearshift.config import ModelConfig

PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAICompatProvider,
    "anthropic": AnthropicProvider,
    "replay": ReplayProvider,
}


def build_provider(model: ModelConfig, session: aiohttp.ClientSession | None, base_dir: str = ".") -> Provider:
    """The provider for one configured model, sharing the gateway's pooled session."""
    cls = PROVIDERS.get(model.provider)
    if cls is None:
        raise ConfigError(f"model {model.name!r}: unknown provider {model.provider!r}; "
                          f"allowed: {sorted(PROVIDERS)}")
    return cls(model, session, base_dir)


__all__ = ["PROVIDERS", "AnthropicProvider", "Completion", "OpenAICompatProvider", "Provider", "ReplayProvider",
           "Stream", "Usage", "build_provider"]
