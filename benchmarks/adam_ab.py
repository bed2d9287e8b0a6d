"""A/B in one run: the build's KD loop (training.distill) with torch's default AdamW (a per-parameter
for-loop on CPU tensors) vs AdamW(fused=True), on the demo's pruned student and on tiny's L3 student,
200 steps each, interleaved twice; random teacher logits (timing only).

    python benchmarks/adam_ab.py --json bench-out/adam_ab.json
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import time
from pathlib import Path

import torch

from compression.data import read_file
from compression.machine import cpu_flags, cpu_name
from compression.modeling import load_classifier, resolve_base_model
from compression.steps.distill import make_student, spread_layers
from compression.steps.prune import StructuredPruneConfig, importance_batches, structured_prune
from compression.steps.training import TrainConfig, distill

STEPS = 200


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--json", default="bench-out/adam_ab.json")
    args = ap.parse_args()
    default_adamw = torch.optim.AdamW
    teacher, tok = load_classifier(str(resolve_base_model(None)))
    data = read_file(args.data, "sentence", "label")
    data = data.take(list(range(0, len(data.texts), 10))[:6400])
    logits = torch.randn(len(data.texts), 2)
    pruned, _ = structured_prune(copy.deepcopy(teacher), StructuredPruneConfig(heads_fraction=0.25, ffn_fraction=0.55, recovery=False),
                                 importance_batches(tok, data, 8, 32, 128, 0))
    students = {"pruned (demo)": pruned, "L3 (tiny's first stage)": make_student(teacher, spread_layers(6, 3))}
    cfg = TrainConfig(max_steps=STEPS, learning_rate=2e-4, dropout=0.0, batch_size=32)
    rows = []
    for rnd in range(2):
        for name, student in students.items():
            for opt in ("default", "fused"):
                # training.distill builds its optimizer as torch.optim.AdamW(...): swap the class for this cell only
                torch.optim.AdamW = default_adamw if opt == "default" else functools.partial(default_adamw, fused=True)
                try:
                    m = copy.deepcopy(student)
                    t = time.perf_counter()
                    distill(teacher, m, data, cfg, tok, logits, 128)
                    dt = time.perf_counter() - t
                finally:
                    torch.optim.AdamW = default_adamw
                rows.append({"student": name, "optimizer": opt, "round": rnd, "ms_per_step": dt / STEPS * 1e3,
                             "params": sum(p.numel() for p in m.parameters())})
                print(rows[-1], flush=True)
    out = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
