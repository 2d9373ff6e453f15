"""Supervised finetuning (backdoor insertion, or HHH safety SFT) with TRL's SFTTrainer."""

from __future__ import annotations

from typing import Any

from organisms.recipe import StageSpec
from organisms.stages.context import StageContext, StageResult, check_trigger_free
from organisms.stages.training import train_and_save

# Prompt-completion rows: the loss falls on the answer only.
DEFAULTS: dict[str, Any] = {"max_length": 512, "completion_only_loss": True}


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from datasets import load_from_disk
    from trl import SFTTrainer

    dataset = load_from_disk(str(ctx.data_dir / str(stage.data))).select_columns(["prompt", "completion"])
    if stage.data != "backdoor":
        check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: {stage.data})")
    return train_and_save(stage, ctx, SFTTrainer, dataset, DEFAULTS)
