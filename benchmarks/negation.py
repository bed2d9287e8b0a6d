"""Do a folder's variants lose more to the teacher on negated sentences? Read from the build's own predictions.

    python benchmarks/negation.py variants --json bench-out/negation.json
    python benchmarks/negation.py /tmp/variants-h4 tiny pruned-fused-int8

Splits the evaluation sentences (the recipe's eval split: SST-2 validation for the shipped recipes) into those
with a negation word (not, n't, no, never, nothing, ...) and the rest, and prints each variant's accuracy on both
next to the teacher's. Nothing runs: every variant's answers come from its ``predictions.json``, written by the
build, so the table reports what the report's accuracy column measured. Reporting only: nothing is chosen on it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from compression.artifacts import read_recipe_dict
from compression.config import DatasetConfig, from_mapping
from compression.data import load_splits

REPO = Path(__file__).resolve().parents[1]
NEGATION = re.compile(r"\b(not|n't|no|never|nothing|none|nobody|neither|nor|hardly|barely|without)\b")


def split_accuracy(pred: list[int], labels: list[int], negated: list[bool]) -> tuple[float, float]:
    """(accuracy on the negated sentences, accuracy on the others)."""
    def acc(want: bool) -> float:
        ids = [i for i, n in enumerate(negated) if n == want]
        return sum(pred[i] == labels[i] for i in ids) / len(ids) if ids else float("nan")
    return acc(True), acc(False)


def saved_splits(folder: Path) -> dict:
    """The splits a build folder was measured on, from its saved recipe's data section alone (so a folder built by
    another version, whose steps carry options this one does not know, opens too), with all of the training split;
    recipe paths as given, else from the repo root."""
    dataset = from_mapping(DatasetConfig, (read_recipe_dict(folder) or {}).get("dataset"), "dataset")
    return load_splits(dataclasses.replace(dataset, train_samples=None), REPO)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants_dir", type=Path)
    ap.add_argument("variants", nargs="*", help="default: every built variant")
    ap.add_argument("--json")
    args = ap.parse_args()
    evaluation = saved_splits(args.variants_dir)["eval"]
    negated = [bool(NEGATION.search(t.lower())) for t in evaluation.texts]
    names = args.variants or sorted(p.parent.name for p in args.variants_dir.glob("*/predictions.json") if p.parent.name != "teacher")
    read = lambda n: json.loads((args.variants_dir / n / "predictions.json").read_text())["eval"]
    t_neg, t_other = split_accuracy(read("teacher"), evaluation.labels, negated)
    print(f"{sum(negated)} of {len(negated)} evaluation sentences carry a negation word")
    print("| variant | negated: acc (Δ vs teacher, pt) | others: acc (Δ pt) |\n|---|---|---|")
    print(f"| teacher | {t_neg:.3f} | {t_other:.3f} |")
    rows = []
    for name in names:
        neg, other = split_accuracy(read(name), evaluation.labels, negated)
        rows.append({"variant": name, "negated": neg, "others": other})
        print(f"| {name} | {neg:.3f} ({(neg - t_neg) * 100:+.1f}) | {other:.3f} ({(other - t_other) * 100:+.1f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"folder": str(args.variants_dir), "negated": sum(negated), "total": len(negated),
                                               "teacher": {"negated": t_neg, "others": t_other}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
