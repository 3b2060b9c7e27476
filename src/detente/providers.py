"""LLM providers: how an agent spec that is not `scripted:...` becomes an agent.

`openai` (any OpenAI-compatible endpoint, the embedded llama.cpp server included) is the only
built-in provider; a plug-in may register another under `detente.registry.PROVIDERS`, with the
same signature: `make(party, settings, bundle) -> Agent`.
"""

from __future__ import annotations

from typing import Any

from detente.registry import PROVIDERS


@PROVIDERS.register("openai", description="any OpenAI-compatible chat completions endpoint "
                    "(OpenAI, vLLM, Ollama, llama.cpp's server, the embedded model)")
def openai_agent(party: str, settings: Any, bundle: Any) -> Any:
    from detente.agents import endpoint_config, private_view
    from detente.agents.llm_agent import LLMAgent
    from detente.llm import LLMClient

    return LLMAgent(party, private_view(bundle.scenario, party), bundle.briefs[party], settings,
                    LLMClient(endpoint_config(settings)))
