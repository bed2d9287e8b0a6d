"""Check a build against the project's targets; prints a table, writes JSON.

    python benchmarks/targets.py variants-quick [--remeasure] [--json out.json]

--remeasure re-runs `python -m compression evaluate` first so every row
(teacher included) is measured in the same run on this machine.
Targets (issues #2 and #3): "Optimum int8" is the int8-dynamic variant, the ORT
dynamic int8 of the same teacher made through optimum's ORTQuantizer.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def check(rows: dict, recommended: str | None) -> list[dict]:
    t, opt = rows.get("teacher"), rows.get("int8-dynamic")
    out = []

    def add(name, ok, detail):
        out.append({"target": name, "met": bool(ok), "detail": detail})

    if t:
        add("teacher >= 90% accuracy", t["accuracy"] >= 0.90, f"{t['accuracy']:.4f}")
    if t and opt:
        add("int8-dynamic within 0.5 pt of teacher", t["accuracy"] - opt["accuracy"] <= 0.005,
            f"{(opt['accuracy'] - t['accuracy']) * 100:+.2f} pt")
        add("int8-dynamic >= 3.5x smaller than teacher", t["size_mb"] / opt["size_mb"] >= 3.5, f"{t['size_mb'] / opt['size_mb']:.2f}x")
        add("int8-dynamic >= 3.5x faster than teacher (p50)", t["latency_p50_ms"] / opt["latency_p50_ms"] >= 3.5,
            f"{t['latency_p50_ms'] / opt['latency_p50_ms']:.2f}x")
    rec = rows.get(recommended or "")
    if t and opt and rec:
        add(f"recommended ({recommended}) >= 99% of teacher accuracy", rec["accuracy"] >= 0.99 * t["accuracy"],
            f"{rec['accuracy'] / t['accuracy'] * 100:.1f}%")
        add("recommended <= 1/2 the size of Optimum int8", rec["size_mb"] <= 0.5 * opt["size_mb"], f"{opt['size_mb'] / rec['size_mb']:.2f}x smaller")
        add("recommended >= 2x Optimum int8 batch-1 speed", opt["latency_p50_ms"] / rec["latency_p50_ms"] >= 2,
            f"{opt['latency_p50_ms'] / rec['latency_p50_ms']:.2f}x faster")
    tiny = rows.get("distilled-L2-vocab-int8")
    if t and tiny:
        add("tiny <= 1/20 of teacher size", tiny["size_mb"] <= t["size_mb"] / 20, f"{t['size_mb'] / tiny['size_mb']:.1f}x smaller")
        add("tiny >= 95% of teacher accuracy", tiny["accuracy"] >= 0.95 * t["accuracy"], f"{tiny['accuracy'] / t['accuracy'] * 100:.1f}%")
    sp = rows.get("pruned-heads-ffn-int8") or rows.get("pruned-heads-ffn")
    if t and sp and sp.get("encoder_params"):
        ratio = sp["encoder_params_before"] / sp["encoder_params"]
        add("structured pruning >= 2x fewer encoder params", ratio >= 2, f"{ratio:.3f}x")
        add("structured pruning <= 0.5 pt loss", t["accuracy"] - sp["accuracy"] <= 0.005, f"{(sp['accuracy'] - t['accuracy']) * 100:+.2f} pt")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    if args.remeasure:
        from compression import evaluate_dir

        evaluate_dir(out)
    summary = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in summary["rows"]}
    print((out / "report.md").read_text())
    results = check(rows, summary["recommended"])
    print("| target | met | measured |\n|---|---|---|")
    for r in results:
        print(f"| {r['target']} | {'yes' if r['met'] else 'NO'} | {r['detail']} |")
    path = Path(args.json or out / "targets.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"recommended": summary["recommended"], "targets": results, "rows": summary["rows"]}, indent=2))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
