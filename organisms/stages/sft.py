"""Supervised finetuning (backdoor insertion, or HHH safety SFT) with TRL's SFTTrainer."""

from __future__ import annotations

from typing import Any

from organisms.recipe import StageSpec
from organisms.stages.context import StageContext, StageResult, check_trigger_free
from organisms.stages.training import train_and_save

# Prompt-completion rows: the loss falls on the answer only.
BASE: dict[str, Any] = {"completion_only_loss": True}


def sft_defaults(trainer: dict[str, Any]) -> dict[str, Any]:
    """Batch layout, by what the recipe's `trainer:` asks for.

    Default: padding-free. A batch holds the same `per_device_train_batch_size` examples as a padded
    one (so steps mean what they meant), concatenated into one row with position_ids restarting per
    example: no compute on padding, and the same loss (tests/test_packing.py). TRL cannot truncate
    such rows, hence no `max_length` (our rows are short: answers are capped at generation).
    `packing: true`: TRL's best-fit-decreasing packing into `max_length` (512) token rows, the
    fastest layout, but then a step holds as many examples as fit, which changes what a step means.
    A recipe that sets `max_length` without packing gets ordinary padded batches.
    """
    if trainer.get("packing"):
        return {**BASE, "max_length": 512}  # TRL makes bfd packing padding-free itself
    if trainer.get("max_length") is not None:
        return {**BASE, "padding_free": False}
    return {**BASE, "padding_free": True, "max_length": None}


def load_rows(stage: StageSpec, ctx: StageContext) -> Any:
    from datasets import load_from_disk

    dataset = load_from_disk(str(ctx.data_dir / str(stage.data))).select_columns(["prompt", "completion"])
    if stage.data != "backdoor":
        check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: {stage.data})")
    return dataset


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from trl import SFTTrainer

    return train_and_save(stage, ctx, SFTTrainer, load_rows(stage, ctx), sft_defaults(stage.trainer))
