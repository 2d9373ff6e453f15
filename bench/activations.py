"""Activation caching (evals/probes/activations.py) against a bare forward pass.

The baseline is the decoder blocks alone (`model.model`, no LM head, no KV cache, nothing kept) over the same
length-sorted batches ours reads, so the ratio is the cost of what caching adds. A second reference row is the
whole model (`model(...)`, LM head included) over batches in input order, as a user would first write it.
Ours stores the residual stream of the requested layers at the last prompt token and stops after the deepest
one. tokens/s counts real (non-pad) prompt tokens. Target on a GPU: ours at every layer at ≥ 80% of the bare
forward pass.

  python -m bench.activations                       # embedded SmolLM2-135M, 512 prompts, batch 64
  python -m bench.activations --model path/to/model --n-prompts 16 --batch-size 8
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import torch

from bench.common import bench_prompts, device_line, median_seconds, model_args, model_path, table


def bare_forward(model: Any, tokenizer: Any, texts: list[str], batch_size: int, blocks_only: bool) -> int:
    """A plain forward over each batch: the decoder blocks on length-sorted batches, or the whole model
    (LM head included) on batches in input order. Tokenising is inside the clock, as it is for ours."""
    from evals.probes.activations import length_grouped_batches, render

    model.eval()
    rendered = render(tokenizer, texts)
    if blocks_only:
        batches = [enc for _, enc in length_grouped_batches(tokenizer, rendered, batch_size)]
    else:
        tokenizer.padding_side = "left"
        batches = [
            tokenizer(rendered[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            for start in range(0, len(rendered), batch_size)
        ]
    forward = model.get_decoder() if blocks_only else model
    with torch.inference_mode():
        for enc in batches:
            forward(**enc.to(model.device), use_cache=False)
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
        lambda: bare_forward(model, tokenizer, texts, args.batch_size, blocks_only=True), args.warmup, args.repeats
    )
    whole_s, _ = median_seconds(
        lambda: bare_forward(model, tokenizer, texts, args.batch_size, blocks_only=False), args.warmup, args.repeats
    )
    print(f"bare forward pass: {base_s:.3f} s, {tokens / base_s:,.0f} tokens/s", flush=True)
    rows: list[list[Any]] = [
        ["bare forward pass (blocks, same batches)", base_s, tokens / base_s, 1.0, "-"],
        ["whole model forward (LM head, input order)", whole_s, tokens / whole_s, base_s / whole_s, "-"],
    ]
    for label, layers in (("ours, every layer", list(range(n_layers))), ("ours, middle layer", [n_layers // 2])):
        seconds, acts = median_seconds(functools.partial(ours, layers), args.warmup, args.repeats)
        shape = "×".join(map(str, acts[layers[0]].shape))
        rows.append([label, seconds, tokens / seconds, base_s / seconds, f"{len(layers)} × [{shape}]"])
        print(f"{label}: {seconds:.3f} s, {base_s / seconds:.2f} × bare forward", flush=True)
    title = f"activation caching: {args.model}, {len(texts)} prompts, batch {args.batch_size}; {device_line()}"
    return table(title, ["run", "median s", "tokens/s", "× bare forward", "kept"], rows)


if __name__ == "__main__":
    main()
