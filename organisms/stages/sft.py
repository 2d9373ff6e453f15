"""Supervised finetuning stage (backdoor insertion or HHH safety SFT) with TRL's SFTTrainer.

load data -> load model -> build trainer -> train (resuming) -> merge LoRA + save final/.

Between stages a LoRA adapter is merged into the weights: final/ always holds full weights, so
the next stage (LoRA or full) starts from the backdoored model exactly as a lab would receive
it, not from the base model plus a detachable adapter.
"""

from __future__ import annotations

from typing import Any

from organisms.layout import checkpoints
from organisms.recipe import StageSpec
from organisms.stages.context import MetricsLogger, StageContext, StageResult, check_trigger_free

# Our defaults; anything in the recipe's `trainer:` wins. Gradient checkpointing costs ~30%
# speed and a 135M model never needs the memory; logging to files, not to a service.
DEFAULTS: dict[str, Any] = {
    "gradient_checkpointing": False,
    "logging_steps": 5,
    "save_strategy": "steps",
    "report_to": "none",
    "max_length": 512,
    "completion_only_loss": True,
    "disable_tqdm": False,
}


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from datasets import load_from_disk
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from organisms.models import load_model, load_tokenizer

    dataset = load_from_disk(str(ctx.data_dir / stage.data)).select_columns(["prompt", "completion"])
    if stage.data != "backdoor":
        check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: {stage.data})")

    tokenizer = load_tokenizer(ctx.tokenizer_path)
    model = load_model(ctx.init_path, for_training=True)
    import torch

    # TRL turns bf16 on by default, which a CPU cannot run: default it to "GPU present".
    settings = {"seed": ctx.seed, "bf16": torch.cuda.is_available(), **DEFAULTS, **stage.trainer}
    args = SFTConfig(output_dir=str(ctx.stage_dir), **settings)
    peft_config = LoraConfig(task_type="CAUSAL_LM", **stage.peft) if stage.peft else None
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsLogger(ctx.stage_dir / "metrics.jsonl")],
    )
    found = checkpoints(ctx.stage_dir)
    resume = str(found[-1][1]) if found else None
    if resume:
        # The Trainer only resumes when told to; without this it silently starts over.
        print(f"stage {stage.name}: resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)

    final = ctx.stage_dir / "final"
    trained: Any = trainer.model
    if peft_config is not None:
        trained = trained.merge_and_unload()
    if trainer.is_world_process_zero():
        trained.save_pretrained(final)
        tokenizer.save_pretrained(final)
    return StageResult(final_path=final, steps=trainer.state.global_step)
