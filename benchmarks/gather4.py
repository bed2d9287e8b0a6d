"""The 4-bit word-embedding Gather, stored two ways, side by side in one run.

    python benchmarks/gather4.py /tmp/variants-full3/int8-dynamic /tmp/variants-full3/distilled-L2-vocab-int8 \
        --json bench-out/gather4.json

For each parent folder (an ONNX variant whose word-embedding Gather reads a float or int8 table),
makes two copies with that table as 4-bit blocks (``quantize_embeddings_4bit``'s defaults):
``int4`` as ONNX Runtime's quantizer writes it (an int4-typed tensor) and ``uint8`` as the step now
stores it (the same nibbles in uint8 bytes, ``bits=4``). Checks that both give the same logits on
the validation sentences (they must: same values), then times the parent and both copies at batch 1
on one thread, interleaved as a build's final pass does (the first 50 validation sentences), and
prints a table and writes JSON with the CPU named.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from compression.artifacts import open_onnx
from compression.config import EvalConfig
from compression.data import read_file
from compression.machine import cpu_flags, cpu_name
from compression.metrics import interleaved_latency
from compression.steps.lowbit import Embeddings4bitConfig, quantize_4bit


def twins(parent: Path, work: Path) -> dict[str, Path]:
    """parent -> {"int4": folder, "uint8": folder}, each a copy of the parent with a 4-bit table."""
    cfg = Embeddings4bitConfig()
    out = {}
    for name, pack in (("int4", False), ("uint8", True)):
        folder = work / f"{parent.name}-{name}"
        shutil.copytree(parent, folder)
        quantize_4bit(folder / "model.onnx", cfg.block_size, cfg.symmetric, matmuls=False, embeddings=True,
                      scales=cfg.scales, pack=pack)
        out[name] = folder
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("parents", nargs="+", type=Path)
    ap.add_argument("--data", default="../shared/data/sst2/validation.tsv")
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--json", default="bench-out/gather4.json")
    args = ap.parse_args()
    texts = read_file(args.data, "sentence", "label").texts
    cfg = EvalConfig(latency_runs=args.runs, latency_rounds=10)
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runners, parents = {}, {}
        for parent in args.parents:
            folders = twins(parent, Path(tmp))
            a, b = open_onnx(folders["int4"]), open_onnx(folders["uint8"])
            diff = float(np.abs(a.served_logits(texts) - b.served_logits(texts)).max())
            runners[parent.name] = open_onnx(parent)
            runners[f"{parent.name} +emb4 int4"], runners[f"{parent.name} +emb4 uint8"] = a, b
            parents[parent.name] = {"max_logit_diff": diff,
                                    "mb": {k: f.joinpath("model.onnx").stat().st_size / 1e6 for k, f in folders.items()}}
        timing = interleaved_latency(runners, texts, cfg)
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}); batch 1, 1 thread, {args.runs} runs in 10 interleaved rounds\n")
    print("| parent | int8 table p50 ms | 4-bit int4-typed p50 ms [rounds] | 4-bit uint8 p50 ms [rounds] | int4 / uint8 | max logit diff | MB int4 / uint8 |")
    print("|---|---|---|---|---|---|---|")
    for name, info in parents.items():
        t = {k: timing[f"{name} +emb4 {k}"] for k in ("int4", "uint8")}
        p = timing[name]["latency_p50_ms"]
        ratio = t["int4"]["latency_p50_ms"] / t["uint8"]["latency_p50_ms"]
        fmt = lambda r: f"{r['latency_p50_ms']:.3f} [{r['latency_p50_round_range_ms'][0]:.3f}, {r['latency_p50_round_range_ms'][1]:.3f}]"  # noqa: E731
        print(f"| {name} | {p:.3f} | {fmt(t['int4'])} | {fmt(t['uint8'])} | {ratio:.3f} | {info['max_logit_diff']:.1e} | "
              f"{info['mb']['int4']:.2f} / {info['mb']['uint8']:.2f} |")
        rows.append({"parent": name, "parent_p50_ms": p, "int4": t["int4"], "uint8": t["uint8"], "int4_over_uint8": ratio, **info})
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, "runs": args.runs, "rows": rows}, indent=2))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
