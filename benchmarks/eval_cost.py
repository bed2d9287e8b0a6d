"""What measuring accuracy as served costs: batch-1 logits against padded batches of 32.

    python benchmarks/eval_cost.py --variants-dir variants --json bench-out/eval_cost.json

For every ONNX variant of a finished build folder, times the logits of the evaluation split and the
out-of-domain set (what a build scores each variant on) two ways, one after the other on the same
threads: ``metrics.served`` (how the build measures accuracy now: each sentence as a one-sentence
request, or unpadded equal-length batches where the variant is proven batch-invariant) and
``runner.logits(texts, 32)`` (padded batches of 32, how accuracy was measured before). Prints the
table, the total added seconds per build and how many predictions differ between the two ways
(the reason for paying it), with the CPU named; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from compression import artifacts
from compression.data import load_splits
from compression.machine import cpu_flags, cpu_name
from compression.metrics import served
from compression.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", default="variants")
    ap.add_argument("--threads", type=int, default=2, help="as the build measures accuracy (the machine's cores)")
    ap.add_argument("--json", default="bench-out/eval_cost.json")
    args = ap.parse_args()
    folder = Path(args.variants_dir).resolve()
    recipe = load_recipe(folder / artifacts.RECIPE)
    splits = load_splits(recipe.dataset, REPO / "recipes", recipe.evaluation.ood_path, recipe.evaluation.ood_samples)
    texts = splits["eval"].texts + (splits["ood"].texts if "ood" in splits else [])
    rows = []
    for variant in artifacts.list_variants(folder):
        if (artifacts.read_metrics(variant) or {}).get("format", artifacts.FORMAT_ONNX) != artifacts.FORMAT_ONNX:
            continue
        runner = artifacts.open_onnx(variant, threads=args.threads)
        runner.logits(texts[:64], 32)  # warm both paths
        t0 = time.perf_counter()
        one = served(runner, texts, args.threads)
        t_served = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = runner.logits(texts, 32)
        t_batched = time.perf_counter() - t0
        rows.append({"variant": variant.name, "sentences": len(texts), "batch_invariant": runner.batch_invariant,
                     "served_s": round(t_served, 2), "batched32_s": round(t_batched, 2), "added_s": round(t_served - t_batched, 2),
                     "predictions_differ": int((one.argmax(-1) != batched.argmax(-1)).sum())})
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}); {len(texts)} sentences per variant "
          f"(evaluation split + out-of-domain set), {args.threads} threads\n")
    print("| variant | as served s | padded batches of 32 s | added s | predictions that differ |\n|---|---|---|---|---|")
    for r in rows:
        how = " (equal-length batches)" if r["batch_invariant"] else ""
        print(f"| {r['variant']} | {r['served_s']:.1f}{how} | {r['batched32_s']:.1f} | {r['added_s']:+.1f} | {r['predictions_differ']} |")
    added = float(sum(r["added_s"] for r in rows))
    print(f"\nadded per build: {added:+.1f} s over {len(rows)} ONNX variants")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "threads": args.threads, "rows": rows, "added_s": added}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
