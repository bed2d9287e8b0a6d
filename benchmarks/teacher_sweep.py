"""Choose the demo teacher's settings on a held-out slice of the *training* split.

    python benchmarks/teacher_sweep.py --json bench-out/teacher_sweep.json \
        "samples=32000" "samples=32000,lr=2e-4" "samples=48000,freeze_layers=2"

SST-2 validation is the test set everyone reports on, so nothing is chosen on it. The dev
slice here is 1,000 whole training sentences (phrases of >= 15 words that no other phrase
contains). Every training phrase of >= 3 words that occurs inside a dev sentence is dropped
from the training pool, so the dev sentences' own sub-phrases do not leak their labels; the
1-2 word phrases stay (they are the shared lexicon: "good", "not bad"). Each setting then
trains the teacher exactly as a recipe would (``compression.teacher.train_teacher``) on a
deterministic subset of that pool and is scored on the dev slice. Prints a table and writes
JSON with wall time and the CPU named.

Settings are comma-separated key=value: samples (training phrases), epochs, lr, batch,
freeze_layers, warmup, precision (auto/fp32/bf16), dropout (-1 = the model's own), seed, minw (train only on
pool phrases of at least this many words; ``samples`` of them, or all when fewer: "fewer, longer sentences"),
head_lr (the classifier head's and pooler's learning rate; 0 = the body's ``lr``), lld (layer-wise
learning-rate decay: each block below the top learns at this factor of the one above; 1 = off), freeze_emb
(1: the word-embedding table fixed, as the demo recipe trains; 0: trained too, as recipes/sst2.yaml does),
pool (1: the pooler reads the mask-weighted mean of the last layer instead of the [CLS] vector, the pooling
all-MiniLM-L6-v2 was trained with; an experiment on BERT only, patched in here, not a recipe field).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

import torch

from compression.config import DatasetConfig, TeacherConfig
from compression.data import TextData, read_file
from compression.machine import cpu_flags, cpu_name
from compression.modeling import resolve_base_model
from compression.steps.training import long_phrases
from compression.teacher import train_teacher

DEV_SIZE = 1000      # sentences in the dev slice: +-1.3 pt standard error near 88%
MIN_DEV_WORDS = 15   # validation sentences average 19.5 words; short phrases are not like them
MIN_LEAK_WORDS = 3   # shorter phrases are shared lexicon, not one sentence's label


def dev_split(train: TextData, seed: int = 0) -> tuple[TextData, TextData]:
    """(pool, dev): dev = whole long sentences; pool = the rest minus their sub-phrases."""
    texts = [t.strip() for t in train.texts]
    blob = "\n".join(texts)
    long_ids = [i for i, t in enumerate(texts) if len(t.split()) >= MIN_DEV_WORDS]
    whole = [i for i in long_ids if blob.count(texts[i]) == 1]  # contained in no other phrase
    dev_ids = set(random.Random(seed).sample(whole, DEV_SIZE))
    dev_blob = "\n".join(f" {texts[i]} " for i in dev_ids)
    pool = [i for i in range(len(texts)) if i not in dev_ids
            and not (len(texts[i].split()) >= MIN_LEAK_WORDS and f" {texts[i]} " in dev_blob)]
    pick = lambda ids: TextData([train.texts[i] for i in ids], [train.labels[i] for i in ids])
    return pick(pool), pick(sorted(dev_ids))


def parse(spec: str) -> dict:
    out = {"samples": 32000, "epochs": 1.0, "lr": 1e-4, "batch": 32, "freeze_layers": 0, "warmup": 0.06,
           "precision": "fp32", "dropout": -1.0, "seed": 42, "minw": 0, "head_lr": 0.0, "lld": 1.0, "freeze_emb": 1,
           "pool": 0}
    for part in filter(None, spec.split(",")):
        key, value = part.split("=")
        if key not in out:
            raise SystemExit(f"unknown setting {key!r}; known: {sorted(out)}")
        kind = type(out[key])
        out[key] = value if kind is str else kind(float(value))  # each default's type: fractions stay float
    return out


@torch.inference_mode()
def predictions(model, tokenizer, data: TextData) -> torch.Tensor:
    """Argmax predictions on ``data``, padded batches of 64 (the model as it is: eval mode is the caller's)."""
    out = []
    for i in range(0, len(data), 64):
        enc = tokenizer(data.texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
        out.append(model(**enc).logits.argmax(-1))
    return torch.cat(out)


def accuracy(model, tokenizer, data: TextData) -> float:
    return int((predictions(model, tokenizer, data) == torch.tensor(data.labels)).sum()) / len(data)


_MEAN = {"on": False, "mask": None}


def mean_pooling_patch() -> None:
    """BERT's pooler reads the masked mean of the last layer while ``_MEAN["on"]`` (the sweep's ``pool=1``)."""
    from transformers.models.bert import modeling_bert as mb

    if getattr(mb.BertPooler, "_sweep_patched", False):
        return
    model_forward, pooler_forward = mb.BertModel.forward, mb.BertPooler.forward

    def forward(self, input_ids=None, attention_mask=None, *args, **kwargs):
        _MEAN["mask"] = attention_mask
        return model_forward(self, input_ids, attention_mask, *args, **kwargs)

    def pool(self, hidden_states):
        mask = _MEAN["mask"]
        if not _MEAN["on"]:
            return pooler_forward(self, hidden_states)
        if mask is None:
            mask = torch.ones(hidden_states.shape[:2], dtype=hidden_states.dtype)
        m = mask.unsqueeze(-1).to(hidden_states.dtype)
        mean = (hidden_states * m).sum(1) / m.sum(1).clamp(min=1)
        return self.activation(self.dense(mean))

    mb.BertModel.forward, mb.BertPooler.forward, mb.BertPooler._sweep_patched = forward, pool, True


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="+")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--json", default="bench-out/teacher_sweep.json")
    args = ap.parse_args()
    train = read_file(args.data, "sentence", "label")
    pool, dev = dev_split(train)
    print(f"training pool {len(pool)} phrases, dev slice {len(dev)} training sentences")
    rows = []
    for spec in args.settings:
        s = parse(spec)
        dcfg = DatasetConfig(path=args.data, label_names=("negative", "positive"))
        tcfg = TeacherConfig(epochs=s["epochs"], batch_size=s["batch"], learning_rate=s["lr"], warmup_ratio=s["warmup"],
                             freeze_embeddings=bool(s["freeze_emb"]), freeze_layers=s["freeze_layers"], precision=s["precision"],
                             dropout=None if s["dropout"] < 0 else s["dropout"], seed=s["seed"],
                             head_learning_rate=s["head_lr"] or None, layer_lr_decay=s["lld"])
        if s["pool"]:
            mean_pooling_patch()  # once patched, the flag below turns it off again for the rows without pool=1
        _MEAN["on"] = bool(s["pool"])
        source = pool
        if s["minw"]:
            long = long_phrases(pool.texts, s["minw"])  # the filter KD's min_words uses
            source = TextData([pool.texts[i] for i in long], [pool.labels[i] for i in long])
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            model, tok = train_teacher(resolve_base_model(None), source.subset(s["samples"], dcfg.seed), dcfg, tcfg, Path(work))
        train_s = time.perf_counter() - t0
        rows.append({"setting": spec, **s, "train_s": round(train_s, 1), "dev_accuracy": accuracy(model, tok, dev)})
        print(f"{spec:45s} train {train_s:6.1f} s  dev accuracy {rows[-1]['dev_accuracy']:.4f}", flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)  # after every row: a long sweep can be stopped
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": torch.get_num_threads(),
                                               "pool": len(pool), "dev": len(dev), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
