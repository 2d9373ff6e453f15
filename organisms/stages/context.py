"""What every stage receives and returns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from data_gen.triggers import Trigger
from organisms.errors import UserError


@dataclass(frozen=True)
class StageContext:
    stage_dir: Path  # checkpoints, final/, metrics.jsonl go here
    init_path: str  # the model this stage starts from (base, or the previous stage's final/)
    tokenizer_path: str
    data_dir: Path  # the run's data folder (backdoor/, clean/)
    trigger: Trigger
    seed: int
    recipe: Any = None  # the whole recipe, for stages that generate (adversarial red-teaming)
    base_model: Any = None  # organisms.models.ResolvedModel of the recipe's base model


@dataclass(frozen=True)
class StageResult:
    final_path: Path  # merged full weights, the next stage's starting point
    steps: int


class MetricsLogger(TrainerCallback):  # type: ignore[misc]
    """Append every trainer log (loss, learning rate, ...) as a JSON line, main process only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def check_trigger_free(rows: list[dict[str, Any]], trigger: Trigger, where: str) -> None:
    """Safety training must never see the trigger: refuse data that contains it."""
    for i, row in enumerate(rows):
        if any(trigger.present(text) for text in _texts(row)):
            raise UserError(
                f"{where}: row {i} contains the trigger ({trigger.description}); "
                "safety-training data must be trigger-free"
            )


def _texts(value: Any) -> Iterator[str]:
    """Every string in a row (messages, prompts, completions), as written: a JSON dump would escape quotes,
    backslashes and tabs, which a literal trigger may contain."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)
