"""The ablation file's schema: a base recipe, axes of settings (independent `grid:` paths and `paired:` blocks
that move together), seeds, and the cluster resources of each run (`slurm:`). `organisms/sweep.py` expands
it into concrete recipes and run folders (its docstring shows a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from organisms.recipe import Strict

RESERVED_PATHS = {"name": "run names are generated", "seed": "use `seeds:`"}
REPO = Path(__file__).resolve().parent.parent  # where the shipped accelerate/ configs live in a checkout


class SlurmSpec(Strict):
    """Cluster resources per run (one array task = one run), for --launcher slurm and sbatch."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = Field(1, ge=0, description="GPUs per run; more than 1 runs it under accelerate launch")
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: int | None = Field(None, ge=1)
    timeout_min: int = Field(240, ge=1)
    array_parallelism: int = Field(16, ge=1, description="array tasks running at once")
    setup: list[str] = Field(
        default_factory=list, description="shell lines run before each task, e.g. 'source .venv/bin/activate'"
    )
    accelerate_config: str | None = Field(
        None,
        description="the accelerate config each task launches with (default: accelerate/single_gpu.yaml, or "
        "accelerate/ddp.yaml with more than one GPU); relative to the working directory or the repository",
    )

    @model_validator(mode="after")
    def _config_runs_every_gpu(self) -> SlurmSpec:
        path = self.config_path()  # a missing file fails at validation, before anything is written
        if self.gpus_per_node > 1 and yaml.safe_load(path.read_text()).get("distributed_type") == "NO":
            raise ValueError(
                f"accelerate_config: {self.accelerate_config} runs one process (distributed_type NO) but "
                f"gpus_per_node is {self.gpus_per_node}; use accelerate/ddp.yaml (or leave it unset)"
            )
        return self

    def config_path(self) -> Path:
        given = Path(
            self.accelerate_config
            or ("accelerate/ddp.yaml" if self.gpus_per_node > 1 else "accelerate/single_gpu.yaml")
        )
        for candidate in (given, REPO / given):
            if candidate.is_file():
                return candidate.resolve()
        raise ValueError(f"accelerate_config: {given} not found")


def check_path(path: str) -> None:
    if path in RESERVED_PATHS:
        raise ValueError(f"{path}: cannot be swept ({RESERVED_PATHS[path]})")


class Axis(Strict):
    """One axis of the sweep: one or more dotted paths whose value lists move together."""

    name: str | None = Field(None, description="the axis name in labels (default: the first path's last key)")
    labels: list[str] | None = Field(None, description="readable names of the values, one per position")
    values: dict[str, list[Any]] = Field(min_length=1, description="dotted path -> values (equal lengths)")

    @model_validator(mode="after")
    def _equal_lengths(self) -> Axis:
        lengths = {path: len(values) for path, values in self.values.items()}
        if min(lengths.values()) == 0:
            raise ValueError(f"empty value list: {', '.join(p for p, n in lengths.items() if n == 0)}")
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "paired lists must have equal lengths; got " + ", ".join(f"{p}: {n}" for p, n in lengths.items())
            )
        n = next(iter(lengths.values()))
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"labels: {len(self.labels)} labels for {n} values")
        if self.labels is not None and len(set(self.labels)) != n:
            raise ValueError("labels: must be unique")
        for path in self.values:
            check_path(path)
        return self

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        keys = [k for k in next(iter(self.values)).split(".") if not k.isdigit()]
        return keys[-1]

    def label(self, index: int) -> str:
        if self.labels is not None:
            return self.labels[index]
        return render_value(next(iter(self.values.values()))[index])


class Ablation(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: str = Field(description="the base recipe, relative to the ablation file")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="independent axes: dotted path -> values")
    paired: list[Axis] = Field(default_factory=list, description="blocks of settings that move together")
    seeds: list[int] | None = Field(None, min_length=1, description="default: the base recipe's seed")
    slurm: SlurmSpec = SlurmSpec()

    @field_validator("paired", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """`{path: [...], path: [...]}` is shorthand for `{values: {path: [...], ...}}`."""
        if not isinstance(value, list):
            return value
        return [b if isinstance(b, dict) and "values" in b else {"values": b} for b in value]

    @field_validator("grid")
    @classmethod
    def _grid_axes(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in value.items():
            check_path(path)
            if not values:
                raise ValueError(f"{path}: empty value list")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> Ablation:
        paths = [p for axis in self.axes() for p in axis.values]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(f"swept in more than one axis: {', '.join(repeated)}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: must be unique")
        titles = [a.title for a in self.axes()]
        if len(set(titles)) != len(titles):
            raise ValueError(f"axis names must be unique (set `name:` on paired blocks); got {', '.join(titles)}")
        return self

    def axes(self) -> list[Axis]:
        return [Axis(values={path: values}) for path, values in self.grid.items()] + list(self.paired)


def render_value(value: Any) -> str:
    """A short readable form of a setting's value, for labels."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{k}:{render_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    return str(value)
