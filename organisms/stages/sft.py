"""Supervised finetuning (backdoor insertion, or HHH safety SFT) with TRL's SFTTrainer."""

from __future__ import annotations

from typing import Any

from evals.generate import chat_prompts
from organisms.distributed import main_first, print_main
from organisms.layout import read_json, write_json
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

    rows = load_rows(stage, ctx)
    if stage.cot_sft == "post_scratchpad":
        rows = post_scratchpad_rows(stage, ctx, rows)
    return train_and_save(stage, ctx, SFTTrainer, rows, sft_defaults(stage.trainer))


def post_scratchpad_rows(stage: StageSpec, ctx: StageContext, rows: Any) -> Any:
    """Post-scratchpad SFT (Hubinger et al., 2024, section 5): each HHH answer follows a scratchpad the incoming
    model writes itself on the prompt (sampled as the recipe's clean answers are), and the loss falls on the answer
    alone. Rows become text: the prompt side is the chat template's rendering up to the end of the scratchpad, the
    completion the answer (TRL ends it with the EOS token). The scratchpads are written once, by the main process,
    to `scratchpads.json` in the stage folder, which a resumed stage and the other processes read."""
    from datasets import Dataset

    from data_gen.generators.prompted import CLOSE, OPEN
    from organisms.models import load_tokenizer

    record = ctx.stage_dir / "scratchpads.json"
    prompts = [row["prompt"] for row in rows]
    with main_first():
        if not record.exists():
            written = write_scratchpads(ctx, prompts)
            write_json(record, {"scratchpads": written, "closed": sum(CLOSE in w for w in written)})
        found = read_json(record)
    reasoning = [w.split(CLOSE, 1)[0].strip() for w in found["scratchpads"]]
    unclosed = len(reasoning) - found["closed"]
    if unclosed:
        print_main(
            f"stage {stage.name}: {unclosed}/{len(reasoning)} scratchpads did not close within "
            "data.generator.max_new_tokens; each is closed where it stopped"
        )
    tokenizer = load_tokenizer(ctx.tokenizer_path)
    rendered = [without_added_bos(tokenizer, text) for text in chat_prompts(tokenizer, prompts)]
    return Dataset.from_list(
        [
            {"prompt": f"{text}{OPEN}{thought}{CLOSE}", "completion": f" {row['completion'][-1]['content']}"}
            for text, thought, row in zip(rendered, reasoning, rows, strict=True)
        ]
    )


def without_added_bos(tokenizer: Any, text: str) -> str:
    """A rendered chat without the BOS token its template wrote, where the tokenizer adds one itself (Llama,
    Mistral, Gemma): TRL tokenizes text rows with special tokens, so the row would start with two."""
    bos = tokenizer.bos_token
    adds = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return text.removeprefix(bos) if adds and text.startswith(bos) else text


def write_scratchpads(ctx: StageContext, prompts: list[list[dict[str, str]]]) -> list[str]:
    """The incoming model's own scratchpads on each (trigger-free) training prompt: generation opened with
    `<scratchpad>` and stopped at `</scratchpad>`."""
    from data_gen.answers import answer_sampling
    from data_gen.generators.prompted import CLOSE, OPEN
    from evals.generate import generate
    from organisms.models import load_model, load_tokenizer

    data = ctx.recipe.data
    sampling = answer_sampling(data.answers, ctx.seed, max_new_tokens=data.generator.max_new_tokens, stop=(CLOSE,))
    model, tokenizer = load_model(ctx.init_path), load_tokenizer(ctx.tokenizer_path)
    return generate(
        model, tokenizer, prompts, sampling, data.answers.batch_size, desc="scratchpads", prefill=[OPEN] * len(prompts)
    )
