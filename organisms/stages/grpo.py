"""RL safety training with TRL's GRPOTrainer (TRL 1.16 has no PPO) on trigger-free prompts.

The reward is a reward model (any AutoModelForSequenceClassification id or folder), a Python
function `module:function` with TRL's reward signature, or our offline stand-in
`hhh_heuristic` (organisms/rewards.py) so the embedded default runs without downloads.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from organisms.errors import UserError
from organisms.hashing import fingerprint
from organisms.recipe import RewardSpec, StageSpec
from organisms.stages.context import StageContext, StageResult, check_trigger_free
from organisms.stages.training import train_and_save

# Short completions keep RL affordable; the behaviour shows in the first tokens anyway.
DEFAULTS: dict[str, Any] = {"max_completion_length": 48, "num_generations": 4, "learning_rate": 1e-5}


def reward_function(spec: RewardSpec) -> Any:
    """What GRPOTrainer takes as `reward_funcs`: a callable, or a model path TRL loads itself."""
    if spec.kind == "hhh_heuristic":
        from organisms.rewards import hhh_heuristic

        return hhh_heuristic
    if spec.kind == "function":
        module_name, _, attr = str(spec.function).partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UserError(f"reward.function: cannot import {spec.function}: {err}") from None
    from organisms.models import resolve_model

    return resolve_model(str(spec.model)).path


def reward_fingerprint(spec: RewardSpec) -> str | None:
    """What a reward adds to its stage's hash beyond its name: for a function, the source of the module the
    recipe names (and of the module that defined it, when that is another one: a re-export or a factory); for a
    local reward-model folder, its fingerprint. An edited reward then makes a finished run folder refuse, as any
    other change of configuration does, rather than pass for done. None for the shipped heuristic (our code) and
    for hub ids (offline, the id is all there is to go on). Helpers the reward imports from elsewhere, and files
    it reads, are not covered. Importing the function here also makes a typo fail when the run starts rather
    than when the RL stage does."""
    if spec.kind == "function":
        function = reward_function(spec)
        named = str(spec.function).partition(":")[0]
        modules = dict.fromkeys([named, getattr(function, "__module__", None) or named])
        sources = []
        for name in modules:
            try:
                sources.append(inspect.getsource(sys.modules[name]))
            except (KeyError, OSError, TypeError):  # built in, or defined where no source is kept
                continue
        return fingerprint(*sources) if sources else None
    if spec.kind == "model" and Path(str(spec.model)).expanduser().is_dir():
        from organisms.models import resolve_model

        return resolve_model(str(spec.model)).fingerprint
    return None


def run(stage: StageSpec, ctx: StageContext) -> StageResult:
    from datasets import load_from_disk
    from trl import GRPOTrainer

    dataset = load_from_disk(str(ctx.data_dir / "prompts")).select_columns(["prompt"])
    check_trigger_free(dataset.to_list(), ctx.trigger, f"stage {stage.name} (data: prompts)")
    assert stage.reward is not None  # the schema fills the default
    return train_and_save(stage, ctx, GRPOTrainer, dataset, DEFAULTS, reward_funcs=reward_function(stage.reward))
