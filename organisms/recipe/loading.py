"""Read a YAML recipe (`yaml.safe_load` only), apply dotted overrides, validate, and turn pydantic's errors
into one line naming the file and field."""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from organisms.errors import UserError
from organisms.recipe.spec import Recipe

R = typing.TypeVar("R", bound=BaseModel)  # a Recipe, a DataRecipe, or an ablation file


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
            raise UserError(f"override {label}: {'.'.join(path[:i])} is {node!r} here, not a mapping or list")


def format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe file's YAML mapping with dotted overrides applied, not yet validated."""
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
        try:
            keys, value = parse_override(text)
            apply_override(data, keys, value, text)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None, schema: type[R] = Recipe) -> R:  # type: ignore[assignment]
    """Read, override and validate a recipe; raise UserError('<file>: <field>: <problem>')."""
    return validate_recipe(read_recipe_data(path, overrides), str(path), schema)


def validate_recipe(data: dict[str, Any], label: str = "recipe", schema: type[R] = Recipe) -> R:  # type: ignore[assignment]
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = format_location(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = _unknown_key_message(schema, first["loc"])
        more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
        # Errors from nested checks start with their own field path ("trainer.lr: ..."): join it on.
        head, _, rest = msg.partition(": ")
        if rest and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head):
            where, msg = f"{where}.{head}" if where else head, rest
        sep = ": " if where else ""
        raise UserError(f"{label}: {where}{sep}{msg}{more}") from None


def _unknown_key_message(schema: type[BaseModel], loc: tuple[Any, ...]) -> str:
    model: Any = schema
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
