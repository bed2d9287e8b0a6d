"""Run-to-run spread of a recipe's teacher: the same recipe trained with several seeds on one machine.

    python benchmarks/teacher_seeds.py --recipe recipes/demo.yaml --seeds 42 7 1234 --json bench-out/teacher_seeds.json

Each seed trains the teacher exactly as the build does (``train_teacher`` with the recipe's
teacher section, only ``seed`` changed) and measures it as the build does (evaluation split, as
served). Nothing is chosen here: the spread is what a reader needs to judge a difference between
two runs, and what the README quotes instead of one run's number. Prints every seed, the mean,
the sample standard deviation and the range, with the CPU named, and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

from compression.data import load_splits
from compression.machine import cpu_flags, cpu_name
from compression.metrics import quality
from compression.modeling import resolve_base_model
from compression.recipe import load_recipe
from compression.runtime import TorchRunner
from compression.teacher import train_teacher


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/demo.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1234])
    ap.add_argument("--json", default="bench-out/teacher_seeds.json")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    splits = load_splits(recipe.dataset, Path(args.recipe).resolve().parent, recipe.evaluation.ood_path,
                         recipe.evaluation.ood_samples)
    rows = []
    for seed in args.seeds:
        tcfg = dataclasses.replace(recipe.teacher, seed=seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            model, tok = train_teacher(resolve_base_model(recipe.base_model), splits["train"], recipe.dataset, tcfg, Path(work))
        seconds = time.perf_counter() - t0
        runner = TorchRunner(model, tok, 2, recipe.dataset.max_length)
        acc = quality(runner.served_logits(splits["eval"].texts), splits["eval"].labels)["accuracy"]
        row = {"seed": seed, "train_s": round(seconds, 1), "accuracy": acc}
        if "ood" in splits:
            q = quality(runner.served_logits(splits["ood"].texts), splits["ood"].labels)
            row["ood_balanced_accuracy"] = q["balanced_accuracy"]
        rows.append(row)
        print(f"seed {seed:6d}: {seconds:6.1f} s, accuracy {acc:.4f}" +
              (f", OOD bal. acc {row['ood_balanced_accuracy']:.4f}" if "ood_balanced_accuracy" in row else ""), flush=True)
    accs = [r["accuracy"] for r in rows]
    summary = {"mean": statistics.mean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
               "min": min(accs), "max": max(accs)}
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    print(f"\nCPU: {machine['cpu']} ({', '.join(machine['flags'])}); recipe {args.recipe}, {len(splits['eval'])} "
          f"evaluation sentences\nteacher accuracy over {len(accs)} seeds: mean {summary['mean']:.4f}, "
          f"sd {summary['sd'] * 100:.2f} pt, range {summary['min']:.4f}–{summary['max']:.4f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "recipe": args.recipe, "rows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
