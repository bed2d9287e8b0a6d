"""A/B in one run: the build's KD loop (training.distill) with torch's default AdamW (a per-parameter
for-loop on CPU tensors) vs AdamW(fused=True), on the demo's pruned student and on tiny's L3 student,
200 steps each, interleaved twice; random teacher logits (timing only).

    python benchmarks/adam_ab.py bench-out/adam_ab.json
"""
import copy
import functools
import json
import sys
import time
from pathlib import Path

import torch

from compression.modeling import load_classifier, resolve_base_model
from compression.data import read_file
from compression.machine import cpu_flags, cpu_name
from compression.steps.prune import StructuredPruneConfig, importance_batches, structured_prune
from compression.steps.distill import make_student, spread_layers
from compression.steps.training import TrainConfig, distill

Orig = torch.optim.AdamW
teacher, tok = load_classifier(str(resolve_base_model(None)))
data = read_file(Path(__file__).resolve().parents[1] / "../shared/data/sst2/train.tsv", "sentence", "label")
data = data.take(list(range(0, 67000, 10))[:6400])
logits = torch.randn(len(data.texts), 2)
pruned, _ = structured_prune(copy.deepcopy(teacher), StructuredPruneConfig(heads_fraction=0.25, ffn_fraction=0.55, recovery=False),
                             importance_batches(tok, data, 8, 32, 128, 0))
students = {"pruned (demo)": pruned, "L3 (tiny's first stage)": make_student(teacher, spread_layers(6, 3))}
cfg = TrainConfig(max_steps=200, learning_rate=2e-4, dropout=0.0, batch_size=32)
rows = []
for rnd in range(2):
    for name, st in students.items():
        for opt in ("default", "fused"):
            torch.optim.AdamW = Orig if opt == "default" else functools.partial(Orig, fused=True)
            m = copy.deepcopy(st)
            t = time.perf_counter()
            distill(teacher, m, data, cfg, tok, logits, 128)
            dt = time.perf_counter() - t
            torch.optim.AdamW = Orig
            rows.append({"student": name, "optimizer": opt, "round": rnd, "ms_per_step": dt / 200 * 1e3,
                         "params": sum(p.numel() for p in m.parameters())})
            print(rows[-1], flush=True)
out = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(), "rows": rows}
json.dump(out, open(sys.argv[1], "w"), indent=1)
