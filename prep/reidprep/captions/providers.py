"""Building the attribute providers and the caption-fusion LLM from the ``captions`` config section."""

from __future__ import annotations

from pathlib import Path

from reidprep.captions.attributes import AttributeProvider
from reidprep.captions.backends.base import ChatBackend
from reidschemas.config import CaptionsConfig, OpenAIConfig

LLM_PROVIDERS = ("openai", "qwen")


def _backend(name: str, config: CaptionsConfig, cache_path: Path, openai: OpenAIConfig | None = None) -> ChatBackend:
    """A chat backend behind the request cache (heavy imports happen here only)."""
    from reidprep.captions.cache import CachedBackend, RequestCache

    if name == "openai":
        from reidprep.captions.backends.openai_backend import OpenAIBackend

        settings = openai or config.openai
        inner: ChatBackend = OpenAIBackend(settings, max_connection_failures=settings.max_connection_failures)
    else:
        from reidprep.captions.backends.qwen_backend import QwenBackend

        inner = QwenBackend(config.qwen)
    return CachedBackend(inner, RequestCache(cache_path))


def prices(name: str, config: CaptionsConfig, openai: OpenAIConfig | None = None) -> tuple[float, float] | None:
    """USD per million (input, output) tokens for the cost estimate; None for local models or unknown prices."""
    c = openai or config.openai
    if name != "openai" or c.usd_per_million_input is None or c.usd_per_million_output is None:
        return None
    return (c.usd_per_million_input, c.usd_per_million_output)


class Providers:
    """The configured attribute providers, and the LLM for ``--fusion llm`` (sharing a backend where possible)."""

    def __init__(self, config: CaptionsConfig, cache_path: Path) -> None:
        names = list(dict.fromkeys(config.providers))
        if not names:
            raise ValueError("captions.providers is empty: name at least one of heuristic, openai, qwen, import")
        if "import" in names and len(names) > 1:
            raise ValueError("the import provider reads released captions and cannot be mixed with other providers")
        self.imported = None
        self.attribute: list[AttributeProvider] = []
        self.fusion: ChatBackend | None = None
        self.fusion_prices: tuple[float, float] | None = None
        backends: dict[str, ChatBackend] = {}
        for name in names:
            if name == "import":
                from reidprep.captions.importer import ReleasedCaptions

                if config.import_dir is None:
                    raise ValueError("provider import needs captions.import_dir (the folder of released captions)")
                self.imported = ReleasedCaptions(config.import_dir)
            elif name == "heuristic":
                from reidprep.captions.heuristic import HeuristicProvider

                self.attribute.append(HeuristicProvider())
            else:
                from reidprep.captions.mllm import MLLMAttributeProvider

                backends[name] = _backend(name, config, cache_path)
                provider = MLLMAttributeProvider(backends[name])
                provider.usage.usd_per_million = prices(name, config)
                self.attribute.append(provider)
        if config.fusion == "llm" and self.imported is None and config.fusion_openai is not None:
            self.fusion = _backend("openai", config, cache_path, config.fusion_openai)
            self.fusion_prices = prices("openai", config, config.fusion_openai)
        elif config.fusion == "llm" and self.imported is None:
            fusion_name = config.fusion_provider or next((n for n in names if n == "openai" or n == "qwen"), None)
            if fusion_name is None:
                raise ValueError(
                    "--fusion llm needs an LLM: add openai or qwen to captions.providers, "
                    "or set captions.fusion_provider"
                )
            self.fusion = backends.get(fusion_name) or _backend(fusion_name, config, cache_path)
            self.fusion_prices = prices(fusion_name, config)
