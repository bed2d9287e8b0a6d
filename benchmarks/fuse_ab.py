"""Fuse, then quantize, side by side in one run: Optimum's plain int8 route vs ORT-fused + int8.

    python benchmarks/fuse_ab.py --json bench-out/fuse_ab.json

For three shapes of model made from one fine-tuned teacher (the teacher itself, a 3-layer student
and the demo's structurally pruned 6-layer model with uneven head counts; the students untrained,
only their graphs and speed matter here), exports the float graph and builds four graphs: fp32,
fused fp32, dynamic int8 and fused + dynamic int8 (optimum's ORTQuantizer with the CPU's preset).
Each is timed at batch 1 on one thread (median of interleaved rounds over 50 training sentences)
and compared with its fp32 graph on 1,000 held-out training sentences (agreement, largest logit
difference). Prints a table and writes JSON with the CPU named.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_sweep import dev_split  # noqa: E402

from compression.data import read_file  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402
from compression.modeling import load_classifier  # noqa: E402
from compression.runtime import OnnxRunner  # noqa: E402
from compression.steps.distill import make_student, spread_layers  # noqa: E402
from compression.steps.export import export_onnx  # noqa: E402
from compression.steps.fuse import FuseConfig, fuse  # noqa: E402
from compression.steps.prune import importance_batches, select_heads, taylor_importance, prune_heads_ffn  # noqa: E402
from compression.steps.quantize import QuantizeDynamicConfig, quantize_dynamic  # noqa: E402

ROUNDS = 8


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="bench-out/student-sweep/teacher-32000")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--work", default="bench-out/fuse-ab")
    ap.add_argument("--json", default="bench-out/fuse_ab.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool, dev = dev_split(read_file(args.data, "sentence", "label"))
    teacher, tok = load_classifier(args.teacher)
    config = json.loads((Path(args.teacher) / "config.json").read_text())
    pruned = copy.deepcopy(teacher)
    heads, ffn = taylor_importance(pruned, importance_batches(tok, pool, 16, 32, 128, 0))
    keep = [torch.sort(torch.topk(s, int(round(s.numel() * 0.45))).indices).values for s in ffn]
    prune_heads_ffn(pruned, select_heads(heads, 0.5), keep)
    models = {"teacher (6 layers)": teacher, "student (3 layers)": make_student(teacher, spread_layers(6, 3)),
              "pruned (6 layers, 1/2 heads, 0.45 FFN)": pruned}
    graphs = {}
    for name, model in models.items():
        slug = name.split()[0]
        fp32 = work / f"{slug}-fp32.onnx"
        export_onnx(model.eval(), fp32)
        fused = work / f"{slug}-fused.onnx"
        shutil.copy(fp32, fused)
        fuse(fused, FuseConfig())
        int8, fused_int8 = work / f"{slug}-int8.onnx", work / f"{slug}-fused-int8.onnx"
        shutil.copy(fp32, int8)
        quantize_dynamic(int8, QuantizeDynamicConfig())
        shutil.copy(fused, fused_int8)
        quantize_dynamic(fused_int8, QuantizeDynamicConfig())
        graphs[name] = {"fp32": fp32, "fused fp32": fused, "int8 (Optimum's route)": int8, "fused + int8": fused_int8}
    runner = lambda p: OnnxRunner(p, Path(args.teacher) / "tokenizer.json", config, 128, "[PAD]")  # noqa: E731
    rows = []
    for name, paths in graphs.items():
        runners = {label: runner(p) for label, p in paths.items()}
        encoded = [runners["fp32"].encode([t]) for t in pool.texts[:50]]
        times = {label: [] for label in runners}
        for _ in range(ROUNDS):  # interleaved: drift of a shared machine hits every graph alike
            for label, r in runners.items():
                for e in encoded[:5]:
                    r.forward(e)
                t0 = time.perf_counter()
                for e in encoded:
                    r.forward(e)
                times[label].append((time.perf_counter() - t0) * 1e3 / len(encoded))
        ref = runners["fp32"].served_logits(dev.texts)
        for label, r in runners.items():
            logits = ref if label == "fp32" else r.served_logits(dev.texts)
            rows.append({"model": name, "graph": label, "ms": statistics.median(times[label]),
                         "agreement_with_fp32": float(np.mean(logits.argmax(-1) == ref.argmax(-1))),
                         "max_logit_diff": float(np.abs(logits - ref).max()),
                         "mb": paths[label].stat().st_size / 1e6})
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}); batch 1, 1 thread, mean ms per sentence over 50 "
          f"training sentences, median of {ROUNDS} interleaved rounds; agreement on {len(dev)} held-out training sentences\n")
    print("| model | graph | ms | × vs int8 | agreement with fp32 | max logit diff | MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x["ms"] for x in rows if x["model"] == r["model"] and x["graph"].startswith("int8"))
        print(f"| {r['model']} | {r['graph']} | {r['ms']:.2f} | {base / r['ms']:.2f} | {r['agreement_with_fp32']:.4f} | "
              f"{r['max_logit_diff']:.3f} | {r['mb']:.1f} |")
    Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
