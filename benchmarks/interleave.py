"""Why the app's live latency reads above the build's p50: one model in a tight loop vs between others.

    python benchmarks/interleave.py --variants-dir variants --json bench-out/interleave.json

Loads every served variant of a build folder as the app does (``serving.load_family``: one
single-thread ONNX session each) and times batch-1 forwards (``runtime.timed_forward``) on the
build's latency sentences in one process, three ways: ``tight`` (one variant alone, back to back,
cycling the sentences twice: what the build's p50 and a server of one model measure), ``between``
(each sentence runs through every variant in turn, as one app request does, each variant repeated
``--repeats`` times back to back; the median of each repeat is printed), and ``small`` (the same
interleaving among the three fastest variants only: does the cost come from big files evicting small
ones?). Prints a table with the CPU named and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appserver import latency_texts  # noqa: E402

from compression.machine import cpu_flags, cpu_name  # noqa: E402
from compression.runtime import timed_forward  # noqa: E402
from compression.serving import load_family  # noqa: E402


def interleaved(variants, encoded: dict, sentences: int, repeats: int) -> dict[str, list[float]]:
    """Median ms of each back-to-back repeat, per variant, over ``sentences`` requests."""
    times = {v.name: [[] for _ in range(repeats)] for v in variants}
    for i in range(sentences):
        for v in variants:
            enc = encoded[v.name][i % len(encoded[v.name])]
            for k in range(repeats):
                times[v.name][k].append(timed_forward(v.runner, enc)[1])
    return {name: [statistics.median(t) for t in per] for name, per in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants-dir", default="variants")
    ap.add_argument("--sentences", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="bench-out/interleave.json")
    args = ap.parse_args()
    folder = Path(args.variants_dir).resolve()
    texts, _ = latency_texts(folder)
    family = load_family(folder)
    variants = list(family.variants.values())
    encoded = {v.name: [v.runner.encode([t]) for t in texts] for v in variants}
    interleaved(variants, encoded, 3, 1)  # warm-up requests
    tight = {v.name: statistics.median(timed_forward(v.runner, e)[1] for e in encoded[v.name] * 2) for v in variants}
    between = interleaved(variants, encoded, args.sentences, args.repeats)
    small = sorted(variants, key=lambda v: tight[v.name])[:3]
    among_small = interleaved(small, encoded, args.sentences, 1)
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}); {args.sentences} requests, 1 thread per variant\n")
    print(f"| variant | build p50 ms | tight loop ms | between others, repeats 1..{args.repeats} | among the 3 fastest only |")
    print("|---|---|---|---|---|")
    rows = []
    for v in variants:
        row = {"variant": v.name, "build_p50_ms": v.metrics.get("latency_p50_ms"), "tight_ms": tight[v.name],
               "between_ms": between[v.name], "among_small_ms": among_small.get(v.name, [None])[0]}
        rows.append(row)
        b = f"{row['build_p50_ms']:.2f}" if row["build_p50_ms"] is not None else "—"
        s = f"{row['among_small_ms']:.2f}" if row["among_small_ms"] is not None else ""
        print(f"| {v.name} | {b} | {row['tight_ms']:.2f} | {' / '.join(f'{x:.2f}' for x in row['between_ms'])} | {s} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "sentences": args.sentences, "repeats": args.repeats,
                                           "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
