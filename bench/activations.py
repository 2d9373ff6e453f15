"""Activation caching (evals/probes/activations.py) against a bare forward pass.

Both read the same rendered prompts in the same batches. The bare forward pass is
`model(input_ids, attention_mask)` without a KV cache: every block and the LM head, nothing kept.
Ours stores the residual stream of the requested layers at the last prompt token and stops after
the deepest one. tokens/s counts real (non-pad) prompt tokens. Target on a GPU: ours at every
layer at ≥ 80% of the bare forward's throughput.

  python -m bench.activations                       # embedded SmolLM2-135M, 512 prompts, batch 64
  python -m bench.activations --model path/to/model --n-prompts 16 --batch-size 8
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import torch

from bench.common import bench_prompts, device_line, median_seconds, model_args, model_path, table


def bare_forward(model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> int:
    """The baseline: a plain forward over each batch (no cache, no hidden states kept)."""
    from evals.probes.activations import render

    model.eval()
    tokenizer.padding_side = "left"
    rendered = render(tokenizer, texts)
    with torch.inference_mode():
        for start in range(0, len(rendered), batch_size):
            enc = tokenizer(
                rendered[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            model(**enc.to(model.device), use_cache=False)
    return len(rendered)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(parser)
    parser.add_argument("--n-prompts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    from evals.probes.activations import decoder_layers, render, residual_activations
    from organisms.models import load_model, load_tokenizer

    path = model_path(args.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    texts = bench_prompts(args.n_prompts)
    n_layers = len(decoder_layers(model))
    tokens = sum(len(ids) for ids in tokenizer(render(tokenizer, texts), add_special_tokens=False)["input_ids"])

    def ours(layers: list[int]) -> dict[int, torch.Tensor]:
        return residual_activations(model, tokenizer, texts, layers, batch_size=args.batch_size)

    base_s, _ = median_seconds(
        lambda: bare_forward(model, tokenizer, texts, args.batch_size), args.warmup, args.repeats
    )
    rows: list[list[Any]] = [["bare forward pass", base_s, tokens / base_s, 1.0, "-"]]
    for label, layers in (("ours, every layer", list(range(n_layers))), ("ours, middle layer", [n_layers // 2])):
        seconds, acts = median_seconds(functools.partial(ours, layers), args.warmup, args.repeats)
        shape = "×".join(map(str, acts[layers[0]].shape))
        rows.append([label, seconds, tokens / seconds, base_s / seconds, f"{len(layers)} × [{shape}]"])
    title = f"activation caching: {args.model}, {len(texts)} prompts, batch {args.batch_size}; {device_line()}"
    return table(title, ["run", "median s", "tokens/s", "× bare forward", "kept"], rows)


if __name__ == "__main__":
    main()
