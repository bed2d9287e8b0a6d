"""Choose static int8's settings on held-out *training* sentences: accuracy kept, and which op loses it.

    python benchmarks/static_sweep.py --json bench-out/static_sweep.json \
        "method=minmax,matmuls=all,per_channel=0" "method=percentiles,matmuls=weights,per_channel=1" ...

Uses the teacher that ``student_sweep.py`` trains and caches (the demo teacher on the training pool)
and ``teacher_sweep.dev_split``'s dev slice of 1,000 whole training sentences; calibration sentences
come from the pool. For each setting: the quantized graph's dev accuracy beside the float graph's
(both as served), the agreement with it, batch-1 p50 on one thread, and the three ops with the
lowest SQNR (``quantize.op_errors``). Prints a table and writes JSON with the CPU named.

Settings: method (minmax/percentiles/entropy), percentile, matmuls (weights/all), per_channel (0/1),
samples (calibration sentences), sym_act (0/1), keep (ffnout: FFN output projections left in float;
else regular expressions joined by ``;``), smooth (SmoothQuant's alpha; 0 = off).

Beside accuracy, two label-free columns say how far the int8 logits move from the float graph's:
the spread (std) of the error in the logit margin (positive minus negative logit) over the dev slice,
and its mean absolute value on the 100 sentences nearest the float graph's decision boundary, where
an error flips an answer. A flip count on 1,000 sentences moves by chance; these move with the error.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_sweep import dev_split  # noqa: E402

from compression.data import read_file  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402
from compression.modeling import load_classifier  # noqa: E402
from compression.runtime import OnnxRunner, time_forward  # noqa: E402
from compression.steps.export import export_onnx  # noqa: E402
from compression.steps.quantize import (  # noqa: E402
    QuantizeStaticConfig, activation_absmax, op_errors, quantize_static, sentence_feeds, weight_matmuls,
)


FFN_OUT = r"layer\.\d+/output/dense"


def parse(spec: str) -> QuantizeStaticConfig:
    kw = {"method": "minmax", "matmuls": "all", "per_channel": False, "calibration_samples": 128}
    for part in filter(None, spec.split(",")):
        key, value = part.split("=")
        if key == "samples":
            kw["calibration_samples"] = int(value)
        elif key in ("per_channel", "sym_act"):
            kw["per_channel" if key == "per_channel" else "symmetric_activations"] = value == "1"
        elif key in ("percentile", "smooth"):
            kw[key] = float(value)
        elif key == "keep":  # ffnout: BERT's FFN output projections stay float (their outputs carry outliers)
            kw["keep_float"] = (FFN_OUT,) if value == "ffnout" else tuple(filter(None, value.split(";")))
        else:
            kw[key] = value
    return QuantizeStaticConfig(**kw)


def channel_table(fp32: Path, columns: dict) -> list[dict]:
    """For each weight MatMul's input in the float graph: its largest per-channel |x| over 64
    calibration sentences, the median channel's, and their ratio (what a per-tensor int8 scale
    spends on one channel). MatMuls sharing an input (Q, K, V) share a row."""
    import onnx

    model = onnx.load(str(fp32), load_external_data=False)
    names = set(weight_matmuls(fp32))
    inputs = {}
    for n in model.graph.node:
        if n.name in names:
            inputs.setdefault(n.input[0], []).append(n.name)
    amax = activation_absmax(fp32, list(inputs), sentence_feeds(columns))
    rows = [{"matmuls": inputs[x], "max": float(a.max()), "median": float(np.median(a)), "ratio": float(a.max() / np.median(a))}
            for x, a in amax.items()]
    print("| input of | max abs channel | median channel | ratio |\n|---|---|---|---|")
    for r in rows:
        label = ", ".join(re.sub(r"^/(bert/)?(encoder/)?|/MatMul$", "", m) for m in r["matmuls"])
        print(f"| {label} | {r['max']:.2f} | {r['median']:.2f} | {r['ratio']:.1f} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="*", help="none: only the float graph's channel table")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--teacher", default="bench-out/student-sweep/teacher-32000")
    ap.add_argument("--work", default="bench-out/static-sweep")
    ap.add_argument("--json", default="bench-out/static_sweep.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool, dev = dev_split(read_file(args.data, "sentence", "label"))
    model, tok = load_classifier(args.teacher)
    fp32 = work / "fp32.onnx"
    if not fp32.is_file():
        export_onnx(model, fp32)
    import json as _json

    config = _json.loads((Path(args.teacher) / "config.json").read_text())
    runner = lambda path: OnnxRunner(path, Path(args.teacher) / "tokenizer.json", config, 128, "[PAD]")  # noqa: E731
    ref = runner(fp32)
    ref_logits = ref.served_logits(dev.texts)
    ref_pred = ref_logits.argmax(-1)
    ref_margin = ref_logits[:, -1] - ref_logits[:, 0]
    near = np.argsort(np.abs(ref_margin))[:100]
    y = np.array(dev.labels)
    calib_texts = pool.subset(2048, 1).texts
    enc = tok(calib_texts, truncation=True, max_length=128)
    columns = {k: list(v) for k, v in enc.items() if k in ref.input_names}
    feeds = sentence_feeds({k: v[:16] for k, v in columns.items()})
    encoded = [ref.encode([t]) for t in dev.texts[:50]]
    base_ms = statistics.median(time_forward(ref, encoded, 200, 20))
    print(f"float graph: dev accuracy {np.mean(ref_pred == y):.4f}, p50 {base_ms:.2f} ms")
    channels = channel_table(fp32, {k: v[:64] for k, v in columns.items()})

    def dump(rows):
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "cpu_flags": cpu_flags(), "dev": len(dev), "rows": rows,
                                               "float_channels": channels}, indent=1))
    rows = []
    for spec in args.settings:
        cfg = parse(spec)
        path = work / "q.onnx"
        shutil.copy(fp32, path)
        calib = columns
        if cfg.method != "minmax":  # histogram calibration stacks activations: one length for all
            enc = tok(calib_texts[: cfg.calibration_samples], truncation=True, max_length=128, padding="longest")
            calib = {k: list(v) for k, v in enc.items() if k in ref.input_names}
        quantize_static(path, cfg, {k: v[: cfg.calibration_samples] for k, v in calib.items()})
        q = runner(path)
        logits = q.served_logits(dev.texts)
        pred = logits.argmax(-1)
        err = logits[:, -1] - logits[:, 0] - ref_margin
        ms = statistics.median(time_forward(q, [q.encode([t]) for t in dev.texts[:50]], 200, 20))
        worst = op_errors(fp32, path, feeds, 3)
        row = {"setting": spec, "dev_accuracy": float(np.mean(pred == y)), "float_dev_accuracy": float(np.mean(ref_pred == y)),
               "agreement": float(np.mean(pred == ref_pred)), "margin_error_sd": float(err.std()),
               "near_boundary_mae": float(np.abs(err[near]).mean()), "size_mb": path.stat().st_size / 1e6,
               "p50_ms": ms, "float_p50_ms": base_ms, "worst_ops": worst}
        rows.append(row)
        print(f"{spec:60s} dev {row['dev_accuracy']:.4f} ({(row['dev_accuracy'] - row['float_dev_accuracy']) * 100:+.1f} pt) "
              f"agree {row['agreement']:.4f} margin err sd {row['margin_error_sd']:.3f} near {row['near_boundary_mae']:.3f} "
              f"{row['size_mb']:.1f} MB p50 {ms:.2f} ms worst {[(w['node'][-30:], w['sqnr_db']) for w in worst]}", flush=True)
        dump(rows)
    dump(rows)  # written after each setting (a long sweep keeps what it finished) and once more for none
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
