"""How much structured pruning buys at batch 1: the served graph of each pruning shape against Optimum's int8.

    python benchmarks/prune_speed.py --json bench-out/prune_speed.json 0.5,0.55 0.67,0.7 0.75,0.75

Each argument is heads_fraction,ffn_fraction. From one fine-tuned teacher (the student sweep's cached
one), each shape is pruned as ``prune_structured`` ranks it (Taylor importance on 16 pool batches, heads
global, FFN uniform per layer), left untrained (only the graph's shape sets its speed), exported, fused
and dynamic-int8 quantized, as the recipes' ``pruned-fused-int8`` rows are; the teacher's plain dynamic
int8 graph is Optimum's route. Every graph is timed at batch 1 on one thread by the build's own timing pass
(``metrics.interleaved_latency``: every round visits every graph, so a shared machine's drift hits all
alike), p50 ms per sentence over 10 rounds of 50 whole training sentences (the dev slice's: 15+ words,
like validation's); the ratio of means is printed beside it. ``--sentences phrases`` times 50 short pool
phrases instead. This chooses a shape by speed alone: its accuracy comes from a build.
Prints a table and writes JSON with the CPU named.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_sweep import dev_split  # noqa: E402

from compression.config import EvalConfig  # noqa: E402
from compression.data import read_file  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402
from compression.metrics import interleaved_latency  # noqa: E402
from compression.modeling import load_classifier  # noqa: E402
from compression.runtime import OnnxRunner  # noqa: E402
from compression.steps.export import export_onnx  # noqa: E402
from compression.steps.fuse import FuseConfig, fuse  # noqa: E402
from compression.steps.prune import StructuredPruneConfig, importance_batches, select_units, taylor_importance, prune_heads_ffn  # noqa: E402
from compression.steps.quantize import QuantizeDynamicConfig, quantize_dynamic  # noqa: E402

ROUNDS = 10
SENTENCES = 50


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes", nargs="+", help="heads_fraction,ffn_fraction")
    ap.add_argument("--teacher", default="bench-out/student-sweep/teacher-32000")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--work", default="bench-out/prune-speed")
    ap.add_argument("--json", default="bench-out/prune_speed.json")
    ap.add_argument("--sentences", choices=("whole", "phrases"), default="whole",
                    help="time on 50 whole training sentences (15+ words, like validation's) or 50 pool phrases (short)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool, dev = dev_split(read_file(args.data, "sentence", "label"))
    teacher, tok = load_classifier(args.teacher)
    config = json.loads((Path(args.teacher) / "config.json").read_text())
    importance = taylor_importance(copy.deepcopy(teacher), importance_batches(tok, pool, 16, 32, 128, 0))
    base = work / "teacher-int8.onnx"
    export_onnx(teacher.eval(), base)
    quantize_dynamic(base, QuantizeDynamicConfig())
    graphs = {"teacher, int8 (Optimum's route)": (base, config)}
    for shape in args.shapes:
        h, f = (float(x) for x in shape.split(","))
        heads, keep = select_units(*importance, StructuredPruneConfig(heads_fraction=h, ffn_fraction=f))
        model = prune_heads_ffn(copy.deepcopy(teacher), heads, keep).eval()
        path = work / f"pruned-{h}-{f}.onnx"
        export_onnx(model, path)
        fuse(path, FuseConfig())
        quantize_dynamic(path, QuantizeDynamicConfig())
        graphs[f"heads {h}, FFN {f}: fused + int8"] = (path, model.config.to_dict())
    runners = {name: OnnxRunner(p, Path(args.teacher) / "tokenizer.json", cfg, 128, "[PAD]") for name, (p, cfg) in graphs.items()}
    texts = (dev if args.sentences == "whole" else pool).texts[:SENTENCES]
    # the build's own timing pass: every graph in every round, rotated; each round runs every sentence once
    timing = EvalConfig(latency_runs=ROUNDS * SENTENCES, warmup=5, latency_sentences=SENTENCES, latency_rounds=ROUNDS)
    timed = interleaved_latency(runners, texts, timing)
    names = list(runners)
    ref = timed[names[0]]
    rows = [{"graph": n, "ms": timed[n]["latency_p50_ms"], "mean_ms": timed[n]["latency_mean_ms"],
             "round_range_ms": timed[n]["latency_p50_round_range_ms"],
             "x_int8": ref["latency_p50_ms"] / timed[n]["latency_p50_ms"],
             "x_int8_mean": ref["latency_mean_ms"] / timed[n]["latency_mean_ms"],
             "mb": graphs[n][0].stat().st_size / 1e6} for n in names]
    machine = {"cpu": cpu_name(), "flags": cpu_flags()}
    what = "whole training sentences (15+ words)" if args.sentences == "whole" else "training pool phrases"
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}); batch 1, 1 thread, p50 ms per sentence over "
          f"{SENTENCES} {what} x {ROUNDS} interleaved rounds (metrics.interleaved_latency, as a build times its rows)\n")
    print("| graph | p50 ms [one round's range] | × Optimum int8 (p50 / mean) | MB |\n|---|---|---|---|")
    for r in rows:
        lo, hi = r["round_range_ms"]
        print(f"| {r['graph']} | {r['ms']:.2f} [{lo:.2f}, {hi:.2f}] | {r['x_int8']:.2f} / {r['x_int8_mean']:.2f} | {r['mb']:.1f} |")
    Path(args.json).write_text(json.dumps({"machine": machine, "rounds": ROUNDS, "sentences": args.sentences,
                                           "statistic": "p50 per sentence, interleaved rounds", "rows": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
