"""Where CPU training time goes, and what bf16 autocast buys: one optimizer step per setting.

    python benchmarks/train_step.py --json bench-out/train_step.json

Batch 32 of random ids at SST-2's mean training length (13 tokens) and at 32 tokens, on all
cores; every setting is run in turn, 12 rounds, and the median of rounds 3-12 is kept, so
slow drift of a shared machine hits every setting alike. Rows: the demo teacher's step
(lowest two blocks and the embeddings frozen, as recipes/demo.yaml trains it) and one KD
variant's step (a 3-layer student against cached teacher logits, as the build's KD loop runs
it), each in the old setting (fp32, SDPA attention, dropout 0.1) and the new one (bf16 autocast
with fp32 master weights, eager attention, dropout 0), and the two levers one at a time.
Prints a table with milliseconds per sentence and the fp32/bf16 ratio, and writes JSON with
the CPU named. The ratio is only meaningful on the machine it was measured on.

    python benchmarks/train_step.py --profile

    python benchmarks/train_step.py --kd-freeze --json bench-out/train_step_freeze.json

instead times the demo's pruned student's KD step (a quarter of the heads and 55% of the FFN removed, as
recipes/demo.yaml's x-prune; fp32 or bf16 as ``precision: auto`` picks, eager, dropout 0) with
``freeze_layers`` 0, 1, 2 and 3 (the embeddings block and the lowest blocks fixed), interleaved the same way.

``--profile`` instead profiles 5 demo-teacher steps (13 tokens, eager, dropout 0) in the precision a build picks
on this CPU (``precision: auto``) with ``torch.profiler`` and prints the operators by self CPU time.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from compression.machine import cpu_flags, cpu_name, training_precision
from compression.modeling import default_base_model, freeze_lowest_layers, set_dropout
from compression.steps.distill import make_student, spread_layers
from compression.steps.losses import distill_loss

ROUNDS, KEEP_FROM = 12, 2
FREEZE = (0, 1, 2, 3)  # --kd-freeze: the lowest blocks fixed during the pruned student's KD
SETTINGS = [  # (name, precision, attention, dropout)
    ("fp32, SDPA, dropout 0.1 (before)", "fp32", "sdpa", 0.1),
    ("bf16, SDPA, dropout 0.1", "bf16", "sdpa", 0.1),
    ("fp32, eager, dropout 0", "fp32", "eager", 0.0),
    ("bf16, eager, dropout 0 (now)", "bf16", "eager", 0.0),
]


def model_for(kind: str, attention: str, dropout: float):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(default_base_model(), num_labels=2, attn_implementation=attention)
    if kind == "teacher":
        m.get_input_embeddings().weight.requires_grad_(False)
        freeze_lowest_layers(m, 2)
    else:
        m = make_student(m, spread_layers(6, 3))
        m.get_input_embeddings().weight.requires_grad_(False)
    set_dropout(m, dropout)
    return m.train()


def step(model, opt, batch, precision: str, kd: bool) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if kd:
        loss = distill_loss(logits.float(), batch["teacher"], batch["labels"], 0.9, 2.0)
    else:
        loss = F.cross_entropy(logits.float(), batch["labels"])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) * 1e3


def random_batch(length: int) -> dict:
    """Batch 32 of random ids at ``length`` tokens, with random labels and teacher logits."""
    ids = torch.randint(1000, 20000, (32, length))
    mask = torch.ones_like(ids)
    mask[16:, length - 3:] = 0  # a length-grouped batch still pads a few positions
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (32,)), "teacher": torch.randn(32, 2)}


def interleaved_medians(models: dict, batch: dict, precision_of, kd: bool) -> dict:
    """One optimizer step per model in turn, ROUNDS times; each model's median ms over the rounds from KEEP_FROM."""
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5) for k, m in models.items()}
    times = {k: [] for k in models}
    for r in range(ROUNDS):
        for k, m in models.items():
            ms = step(m, opts[k], batch, precision_of(k), kd)
            if r >= KEEP_FROM:
                times[k].append(ms)
    return {k: statistics.median(t) for k, t in times.items()}


def write_table(json_path: str, rows: list[dict], note: str, columns: list[tuple[str, str, str]]) -> None:
    """Print the machine line and a markdown table (``columns``: header, row key, format) and write the JSON."""
    machine = {"cpu": cpu_name(), "flags": cpu_flags(), "threads": torch.get_num_threads()}
    print(f"CPU: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['threads']} threads; batch 32, {note}"
          f"median of {ROUNDS - KEEP_FROM} interleaved rounds\n")
    print("| " + " | ".join(h for h, _, _ in columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(format(r[k], f) for _, k, f in columns) + " |")
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


def profile() -> int:
    """Where a demo-teacher step's time goes on this CPU, in the precision the build uses here."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    precision = training_precision("auto", "cpu")
    model = model_for("teacher", "eager", 0.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(1000, 20000, (32, 13))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (32,)), "teacher": torch.randn(32, 2)}
    for _ in range(3):
        step(model, opt, batch, precision, False)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        ms = [step(model, opt, batch, precision, False) for _ in range(5)]
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"CPU: {cpu_name()} ({', '.join(cpu_flags())}), {torch.get_num_threads()} threads; demo-teacher step, "
          f"batch 32 x 13 tokens, {precision} (precision: auto), median {statistics.median(ms):.0f} ms under the profiler\n")
    print("| operator | self CPU % | calls |\n|---|---|---|")
    for e in events[:12]:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f} | {e.count} |")
    return 0


def kd_freeze(json_path: str) -> int:
    """The pruned student's KD step with 0-3 of its lowest blocks (and the embeddings) fixed, interleaved."""
    from compression.steps.prune import StructuredPruneConfig, structured_prune

    precision = training_precision("auto", "cpu")
    cfg = StructuredPruneConfig(heads_fraction=0.25, ffn_fraction=0.55, recovery=False)
    ids = torch.randint(1000, 20000, (32, 13))
    imp = [({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)},
            torch.randint(0, 2, (32,)))] * 4
    model = model_for("teacher", "eager", 0.0).eval()
    model.requires_grad_(True)  # the importance ranking reads every block's weight gradients
    pruned = structured_prune(model, cfg, imp)[0]
    rows = []
    for length in (13, 32):
        models = {}
        for n in FREEZE:
            m = copy.deepcopy(pruned)
            m.requires_grad_(True)
            m.get_input_embeddings().weight.requires_grad_(False)
            if n:
                freeze_lowest_layers(m, n)
            models[n] = m.train()
        med = interleaved_medians(models, random_batch(length), lambda n: precision, True)
        for n in FREEZE:
            rows.append({"model": "pruned student (KD)", "tokens": length, "freeze_layers": n, "precision": precision,
                         "ms_per_step": round(med[n], 1), "ms_per_sentence": round(med[n] / 32, 2),
                         "speedup_vs_0": round(med[0] / med[n], 2)})
    write_table(json_path, rows, f"{precision}, ", [("model", "model", ""), ("tokens", "tokens", ""),
                ("freeze_layers", "freeze_layers", ""), ("ms / step", "ms_per_step", ".0f"),
                ("ms / sentence", "ms_per_sentence", ".2f"), ("× vs 0", "speedup_vs_0", ".2f")])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench-out/train_step.json")
    ap.add_argument("--profile", action="store_true", help="profile the demo teacher's step instead of the timing table")
    ap.add_argument("--kd-freeze", action="store_true", help="time the pruned student's KD step with 0-3 blocks frozen instead")
    args = ap.parse_args()
    if args.kd_freeze:
        return kd_freeze(args.json)
    if args.profile:
        return profile()
    rows = []
    for kind in ("teacher", "student L3 (KD)"):
        for length in (13, 32):
            models = {st: model_for("teacher" if kind == "teacher" else "student", st[2], st[3]) for st in SETTINGS}
            med = interleaved_medians(models, random_batch(length), lambda st: st[1], kind != "teacher")
            for st in SETTINGS:
                rows.append({"model": kind, "tokens": length, "setting": st[0], "ms_per_step": round(med[st], 1),
                             "ms_per_sentence": round(med[st] / 32, 2), "speedup_vs_before": round(med[SETTINGS[0]] / med[st], 2)})
    write_table(args.json, rows, "", [("model", "model", ""), ("tokens", "tokens", ""), ("setting", "setting", ""),
                ("ms / step", "ms_per_step", ".0f"), ("ms / sentence", "ms_per_sentence", ".2f"),
                ("× vs before", "speedup_vs_before", ".2f")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
