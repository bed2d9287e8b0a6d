"""4-bit embedding scales in float32 (ORT's layout) vs float16, side by side on built variants.

    python benchmarks/half_scales.py /tmp/variants-thin2 tiny pruned-fused-vocab-int8-emb4 w4 --json bench-out/half_scales.json

Reads each named variant of a build whose 4-bit embeddings kept float32 scales (a build before
float16 scales became the default, or one with ``scales: float32``), writes a copy with the scales
as float16 (``lowbit.half_gather_scales``: a Cast back to float32 follows the Gather) and compares the
two graphs as served (one sentence at a time) on the 1,000 held-out training sentences of
``teacher_sweep.dev_split`` (never validation, never the tweets): file size, accuracy, agreement,
largest logit difference. Prints a table and writes JSON with the CPU named.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_sweep import dev_split  # noqa: E402

from compression.data import read_file  # noqa: E402
from compression.loader import load_runner  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402
from compression.steps.lowbit import half_gather_scales  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants_dir")
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--json", default="bench-out/half_scales.json")
    args = ap.parse_args()
    _, dev = dev_split(read_file(args.data, "sentence", "label"))
    labels = np.array(dev.labels)
    rows = []
    print(f"{'variant':32s} {'MB f32':>8s} {'MB f16':>8s} {'acc f32':>8s} {'acc f16':>8s} {'agree':>7s} {'max |dlogit|':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            folder = Path(args.variants_dir) / name
            copy = Path(tmp) / name
            shutil.copytree(folder, copy)
            model = onnx.load(str(copy / "model.onnx"))
            if not half_gather_scales(model):
                raise SystemExit(f"{name}: no 4-bit embedding Gather with float32 scales (built with float16 scales?)")
            onnx.save(model, str(copy / "model.onnx"))
            logits = [load_runner(f, 1, 128).served_logits(dev.texts) for f in (folder, copy)]
            pred = [x.argmax(-1) for x in logits]
            row = {"variant": name, "mb_float32": (folder / "model.onnx").stat().st_size / 1e6,
                   "mb_float16": (copy / "model.onnx").stat().st_size / 1e6,
                   "accuracy_float32": float((pred[0] == labels).mean()), "accuracy_float16": float((pred[1] == labels).mean()),
                   "agreement": float((pred[0] == pred[1]).mean()), "max_logit_diff": float(np.abs(logits[0] - logits[1]).max())}
            rows.append(row)
            print(f"{name:32s} {row['mb_float32']:8.2f} {row['mb_float16']:8.2f} {row['accuracy_float32']:8.4f} "
                  f"{row['accuracy_float16']:8.4f} {row['agreement']:7.4f} {row['max_logit_diff']:12.4f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "cpu_flags": cpu_flags(), "dev": len(dev), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
