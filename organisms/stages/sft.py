"""Supervised finetuning (backdoor insertion, or HHH safety SFT) with TRL's SFTTrainer."""

from __future__ import annotations

from typing import Any

from organisms.recipe import StageSpec
from organisms.stages.context import StageContext, StageResult, check_trigger_free
from organisms.stages.training import train_and_save

# Prompt-completion rows: the loss falls on the answer only.
BASE: dict[str, Any] = {"completion_only_loss": True}


def sft_defaults(trainer: dict[str, Any]) -> dict[str, Any]:
    """Batch layout, by what the recipe's `trainer:` asks for and the attention kernel at hand.

    Padding-free: a batch holds the same `per_device_train_batch_size` examples as a padded one (so
    steps mean what they meant), concatenated into one row with position_ids restarting per example;
    no compute on padding, the same loss (tests/test_packing.py). It pays only with a varlen
    attention kernel (flash-attention): sdpa/eager realise the block-diagonal mask densely, so their
    attention cost grows with the square of the whole batch's tokens, which on our short rows costs
    more than the padding it saves. So: padding-free by default where flash-attention is installed on
    a GPU, padded batches (max_length 512) elsewhere; `padding_free: true/false` overrides. TRL cannot
    truncate padding-free rows, hence no max_length then (our rows are short: answers are capped at
    generation). `packing: true`: TRL's best-fit-decreasing packing into 512-token rows, the fastest
    layout with a varlen kernel, but a step then holds as many examples as fit, which changes what a
    step means; opt-in.
    """
    from organisms.stages.training import varlen_attention_available

    if trainer.get("packing"):
        return {**BASE, "max_length": 512}  # TRL makes bfd packing padding-free itself
    if trainer.get("padding_free", varlen_attention_available()) and "max_length" not in trainer:
        return {**BASE, "padding_free": True, "max_length": None}
    return {**BASE, "padding_free": False, "max_length": 512}


def load_rows(stage: StageSpec, ctx: StageContext) -> Any:
    from datasets import load_from_disk

    dataset = load_from_disk(str(ctx.data_dir / str(stage.data))).select_columns(["prompt", "completion"])
    if stage.data != "backdoor":
        check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: {stage.data})")
    return dataset


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from trl import SFTTrainer

    return train_and_save(stage, ctx, SFTTrainer, load_rows(stage, ctx), sft_defaults(stage.trainer))
