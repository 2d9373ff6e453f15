"""Text generation for data builds: `local` (transformers) and `openai` (any compatible server)."""

from data_gen.backends.base import (
    Backend,
    Conversation,
    GenParams,
    Message,
    ResponseCache,
    cached_chat,
    response_cache,
)

__all__ = ["Backend", "Conversation", "GenParams", "Message", "ResponseCache", "cached_chat", "response_cache"]
