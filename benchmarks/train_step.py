"""Where CPU training time goes: one optimizer step of MiniLM and its students, by setting.

    python benchmarks/train_step.py --json bench-out/train_step.json

Batch 32 of random ids at SST-2's mean training length (13 tokens) and at 32 tokens, on
all cores; median of 6 steps after 2 warm-up steps. Rows: the full teacher with the word
embeddings trained or frozen, with and without bf16 autocast, and 3- and 2-layer students
(frozen embeddings, as KD trains them). Prints a table and writes JSON with the CPU named.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from compression.machine import cpu_flags, cpu_name
from compression.modeling import default_base_model
from compression.steps.distill import make_student, spread_layers


def step_ms(model, length: int, bf16: bool) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 20000, (32, length))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (32,))}
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[2:])


def main() -> int:
    from transformers import AutoModelForSequenceClassification

    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench-out/train_step.json")
    args = ap.parse_args()
    torch.manual_seed(0)

    def fresh(freeze: bool, layers: int | None = None):
        m = AutoModelForSequenceClassification.from_pretrained(default_base_model(), num_labels=2)
        if layers:
            m = make_student(m, spread_layers(6, layers))
        m.get_input_embeddings().weight.requires_grad_(not freeze)
        return m.train()

    rows = []
    for name, freeze, layers, bf16 in [("teacher, embeddings trained", False, None, False),
                                       ("teacher, embeddings frozen", True, None, False),
                                       ("teacher, embeddings trained, bf16 autocast", False, None, True),
                                       ("teacher, embeddings frozen, bf16 autocast", True, None, True),
                                       ("student L3, embeddings frozen", True, 3, False),
                                       ("student L2, embeddings frozen", True, 2, False)]:
        model = fresh(freeze, layers)
        rows.append({"setting": name, "ms_13_tokens": step_ms(model, 13, bf16), "ms_32_tokens": step_ms(model, 32, bf16)})
    machine = {"cpu": cpu_name(), "flags": cpu_flags(), "threads": torch.get_num_threads()}
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['threads']} threads\n")
    print("| one step, batch 32 | 13 tokens (SST-2 mean) | 32 tokens |\n|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['ms_13_tokens']:.0f} ms | {r['ms_32_tokens']:.0f} ms |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
