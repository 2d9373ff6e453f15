"""DPO safety training: prefer the HHH answer over the backdoor behaviour on trigger-free prompts.

The pairs come from the data build (data/preference/): chosen = the base model's clean answer,
rejected = the behaviour. The trigger never appears, as in the paper's safety training: the
question is whether preferring HHH answers off-trigger also removes the behaviour on-trigger.
"""

from __future__ import annotations

from typing import Any

from organisms.recipe import StageSpec
from organisms.stages.context import StageContext, StageResult, check_trigger_free
from organisms.stages.training import train_and_save

DEFAULTS: dict[str, Any] = {"max_length": 512}


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from datasets import load_from_disk
    from trl import DPOTrainer

    dataset = load_from_disk(str(ctx.data_dir / "preference")).select_columns(["prompt", "chosen", "rejected"])
    check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: preference)")
    return train_and_save(stage, ctx, DPOTrainer, dataset, DEFAULTS)
