"""Choose the students' KD settings on held-out *training* sentences, never on validation.

    python benchmarks/student_sweep.py --json bench-out/student_sweep.json \
        "kind=L3" "kind=L3,lr=3e-4" "kind=pruned,hidden=1" ...
    python benchmarks/student_sweep.py --heads-left "kind=pruned,heads=0.25,imp=32"   # which heads a ranking keeps

The dev slice and training pool are ``teacher_sweep.dev_split``'s (1,000 whole training sentences;
their 3+-word sub-phrases removed from the pool). A teacher is trained once on the pool with the
demo recipe's settings (cached under --work) and its logits on the pool are computed once; then
each setting builds a student from it exactly as a recipe step would (``make_student`` /
``structured_prune``) and trains it with the build's KD loop (``training.distill``). Prints a table
(training seconds, dev accuracy of the teacher and of the student, PyTorch fp32) and writes JSON with
the CPU named.

Settings are comma-separated key=value: kind (L2, L3, L4, pruned: heads 0.5 + FFN 0.55 of the
6-layer teacher, narrow: L2 then heads 0.5 + FFN 0.5, tiny: the demo's two stages, an L2 trained by this row's KD
settings, then ``heads``/``ffn`` of it removed and half an epoch of KD on 24,000 sentences without variants: pass
heads=0.5,ffn=0.5 as the recipe does; vocabulary pruning and 4-bit embeddings not applied), samples (KD sentences, default 24000),
epochs, lr, alpha, T (temperature), hidden (hidden-state MSE weight; needs a teacher forward per
step), dropout (-1 = the model's own), precision, heads, ffn, imp (Taylor importance batches), seed,
speed (1: also export the student, fuse + int8 it, and time it at batch 1 on one thread against the
teacher's plain int8 graph, Optimum's route, on 50 dev sentences, and score that graph on the dev slice
as served, one sentence at a time), transfer
(KD sentences: pool = the whole training pool, as the first sweeps ran; train = the teacher's own
32,000; unused = the pool's rows the teacher never saw), sched (oneshot: prune, then KD; gradual:
``events`` removals over the first ``ramp`` of the KD steps, each ranked afresh on its share of the
importance batches), events, ramp, comp (1: bias compensation, the removed FFN neurons' mean activation
folded into the FFN output bias before removal), recon (1: least-squares reconstruction, each layer's attention-output
and FFN-output dense refit on the units it keeps to give what the whole layer gave, ``reconstruct``), damp (its
damping, a share of the Gram matrix's mean diagonal), kd (0: score the student as built, before any KD), minw (KD only on
phrases of at least this many words, then ``samples`` of them), aug (teacher-labelled variants per KD sentence,
``training.kd_set``: words swapped for neighbours in the teacher's embedding table), augw (share of words swapped),
loss (the KD term: kl at temperature T, or mse on the raw logits), freeze (the embeddings block and the lowest
this many blocks fixed during the KD of this row's main stage), ema (the KD of this row's main stage keeps an
exponential moving average of the weights at this decay per step instead of the last step's), hnorm (1: each
layer's head importances divided by their L2 norm before the global ranking), fglob (1: FFN neurons ranked across
all layers at once, ``ffn_ranking: global``, so layers keep different widths), lsteps (after KD, this many steps on
the gold labels alone, ``training.label_finetune``; the row also reports the same student before them, under
``before_label``: rows differing only in lsteps/llr share one KD run), llr (that fine-tune's learning rate),
tlayers (tiny's first stage: an L2 by default, or this many of the teacher's layers, spread), tepochs (epochs of
tiny's second stage, the KD after narrowing: 0.5 as the demo recipe), drop (kind=pruned: this teacher layer removed
whole before the heads and FFN are ranked and cut, a 5-layer pruned student; -1 = none).
Besides dev accuracy each row reports agreement: the share of dev sentences where the student predicts what the
teacher predicts (how faithfully it copies the teacher, right or wrong); and the same on the dev slice with
user-text noise (``user_noise``: an @mention in front, a link or a hashtag behind, as users' text carries and
SST-2's phrases never do), per side: of the noisy sentences the teacher calls positive, the share the student
calls positive too ("positives kept"), the same for negatives, and their mean ("balanced"), in PyTorch and, with
speed, as served. A student that drifts from its teacher on text unlike the training phrases shows it there,
without a look at any out-of-domain data set (it ranks the full family's rows as the tweets do, but does not predict
one demo student's tweet gap: BENCHMARKS.md, "user-text noise").
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import random
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_sweep import accuracy, dev_split, predictions  # noqa: E402

from compression.config import DatasetConfig, TeacherConfig  # noqa: E402
from compression.data import read_file  # noqa: E402
from compression.machine import cpu_flags, cpu_name  # noqa: E402
from compression.modeling import load_classifier, resolve_base_model  # noqa: E402
from compression.steps.distill import DistillConfig, make_student, spread_layers  # noqa: E402
from compression.steps.prune import (StructuredPruneConfig, importance_batches, select_units, structured_prune,  # noqa: E402
                                     taylor_importance)
from compression.steps.training import (distill, kd_set, kd_subset, label_finetune, teacher_logits_for,  # noqa: E402
                                        variants_key)
from compression.teacher import train_teacher  # noqa: E402

DEFAULTS = {"kind": "L3", "samples": 24000, "epochs": 1.0, "lr": 1e-4, "alpha": 0.9, "T": 2.0, "hidden": 0.0,
            "dropout": -1.0, "precision": "auto", "heads": 0.5, "ffn": 0.55, "seed": 0, "batch": 32, "imp": 16, "speed": 0,
            "transfer": "pool", "sched": "oneshot", "events": 4, "ramp": 0.5, "comp": 0, "recon": 0, "damp": 0.01, "kd": 1, "minw": 0, "aug": 0,
            "augw": 0.3, "loss": "kl", "freeze": 0, "ema": 0.0, "hnorm": 0, "fglob": 0, "lsteps": 0, "llr": 2e-5,
            "tlayers": 2, "tepochs": 0.5, "drop": -1}

NAMES = ("john", "sarah", "mike", "acme", "support", "team", "store", "bank", "shop", "help")


def user_noise(texts: list[str], seed: int = 7) -> list[str]:
    """Each text with what users' text carries and SST-2's never does, drawn per text: an @mention in front
    (7 in 10), a short link behind (3 in 10), a hashtag behind (3 in 10). None of it says anything about
    sentiment, so a faithful student answers as its teacher does on the noisy text."""
    out = []
    for i, text in enumerate(texts):
        r = random.Random(f"{seed}/{i}")
        t = text.strip()
        if r.random() < 0.7:
            t = f"@{r.choice(NAMES)} {t}"
        if r.random() < 0.3:
            t += " http://t.co/" + "".join(r.choice("abcdefghijk0123456789") for _ in range(8))
        if r.random() < 0.3:
            t += f" #{r.choice(NAMES)}"
        out.append(t)
    return out


def kept(pred: torch.Tensor, teacher_pred: torch.Tensor) -> dict:
    """Per side of the teacher's answer, the share the student gives too, and their mean."""
    pos = float((pred[teacher_pred == 1] == 1).float().mean())
    neg = float((pred[teacher_pred == 0] == 0).float().mean())
    return {"positives_kept": pos, "negatives_kept": neg, "balanced": (pos + neg) / 2}


def parse(spec: str) -> dict:
    out = dict(DEFAULTS)
    for part in filter(None, spec.split(",")):
        key, value = part.split("=")
        if key not in out:
            raise SystemExit(f"unknown setting {key!r}; known: {sorted(out)}")
        kind = type(out[key])
        out[key] = value if kind is str else kind(float(value))
    return out


def teacher_for(pool, work: Path, samples: int):
    """The demo teacher trained on the pool (cached: every sweep compares students of one teacher)."""
    folder = work / f"teacher-{samples}"
    if (folder / "config.json").is_file():
        return load_classifier(str(folder))
    dcfg = DatasetConfig(path="pool", label_names=("negative", "positive"))
    tcfg = TeacherConfig(epochs=1, batch_size=32, learning_rate=1e-4, warmup_ratio=0.06, freeze_embeddings=True,
                         freeze_layers=2)
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = train_teacher(resolve_base_model(None), pool.subset(samples, 0), dcfg, tcfg, Path(tmp))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


def student(teacher, tok, pool, s: dict):
    """The student before KD, its teacher-layer map, and a gradual pruning to run during KD (or None)."""
    kind = s["kind"]
    if kind.startswith("L") or kind == "tiny":  # tiny: first an L2, then narrowed (``narrow_tiny``) after its KD
        layers = spread_layers(6, s["tlayers"] if kind == "tiny" else int(kind[1:]))
        return make_student(teacher, layers), layers, None
    if kind in ("pruned", "narrow"):
        keep = tuple(i for i in range(6) if i != s["drop"])  # drop: one whole teacher layer removed before ranking
        model = make_student(teacher, spread_layers(6, 2) if kind == "narrow" else keep)
        gradual = s["sched"] == "gradual"
        cfg = StructuredPruneConfig(heads_fraction=s["heads"], ffn_fraction=s["ffn"], recovery=gradual, importance_batches=s["imp"],
                                    schedule=s["sched"], events=s["events"], ramp=s["ramp"], compensate=bool(s["comp"]),
                                    reconstruct=bool(s["recon"]), reconstruct_damp=s["damp"],
                                    normalize_heads=bool(s["hnorm"]), ffn_ranking="global" if s["fglob"] else "layer")
        batches = importance_batches(tok, pool, cfg.importance_batches, cfg.batch_size, 128, cfg.seed)
        layers = spread_layers(6, 2) if kind == "narrow" else keep
        if gradual:
            return model, layers, (cfg, batches)
        model, _ = structured_prune(model, cfg, batches)
        return model, layers, None
    raise SystemExit(f"unknown kind {kind!r}")


def narrow_tiny(model, teacher, tok, pool, data, logits, s: dict):
    """The demo recipe's second tiny stage on a trained student (``tlayers`` deep): ``heads``/``ffn`` of it removed
    (the recipe's narrow: 0.4/0.75; 16 importance batches), then ``tepochs`` (the recipe: half an epoch) of KD on
    24,000 of the KD sentences ``data`` (their teacher ``logits``), no variants."""
    cfg = StructuredPruneConfig(heads_fraction=s["heads"], ffn_fraction=s["ffn"], recovery=False)
    model, _ = structured_prune(model, cfg, importance_batches(tok, pool, cfg.importance_batches, cfg.batch_size, 128, cfg.seed))
    kd = DistillConfig(num_layers=1, epochs=s["tepochs"], train_samples=24000, learning_rate=s["lr"], seed=s["seed"],
                       dropout=None if s["dropout"] < 0 else s["dropout"], precision=s["precision"], batch_size=s["batch"])
    return distill(teacher, model, data, kd, tok, logits, 128, list(spread_layers(6, s["tlayers"])))


def int8_ms(model, tok, texts, work: Path, name: str, fused: bool, dev=None, noisy=None):
    """Batch-1 p50 of the model's (fused +) dynamic-int8 graph on one thread, mean over ``texts``, 5 rounds,
    and with ``dev`` that graph's accuracy on it as served (one sentence at a time; else None), with ``noisy``
    (texts) also its predictions on those as served. Returns (ms, accuracy, noisy predictions)."""
    import shutil
    import statistics

    from compression.runtime import OnnxRunner
    from compression.steps.export import export_onnx
    from compression.steps.fuse import FuseConfig, fuse
    from compression.steps.quantize import QuantizeDynamicConfig, quantize_dynamic

    path = work / f"{name}.onnx"
    export_onnx(model, path)
    if fused:
        fuse(path, FuseConfig())
    quantize_dynamic(path, QuantizeDynamicConfig())
    folder = work / "tok"
    if not folder.is_dir():
        tok.save_pretrained(folder)
    runner = OnnxRunner(path, folder / "tokenizer.json", model.config.to_dict(), 128, tok.pad_token)
    encoded = [runner.encode([t]) for t in texts]
    rounds = []
    for _ in range(5):
        for e in encoded[:5]:
            runner.forward(e)
        t0 = time.perf_counter()
        for e in encoded:
            runner.forward(e)
        rounds.append((time.perf_counter() - t0) * 1e3 / len(encoded))
    acc = noisy_pred = None
    if dev is not None:
        pred = runner.served_logits(dev.texts).argmax(-1)
        acc = sum(int(p) == y for p, y in zip(pred, dev.labels)) / len(dev)
    if noisy is not None:
        noisy_pred = torch.from_numpy(runner.served_logits(noisy).argmax(-1))
    shutil.rmtree(folder, ignore_errors=True)
    return statistics.median(rounds), acc, noisy_pred


def heads_left(teacher, tok, pool, s: dict) -> int:
    """Heads left per layer (bottom to top) by the raw global ranking and by the per-layer normalized one."""
    model = copy.deepcopy(teacher).requires_grad_(True)  # the ranking reads every block's weight gradients
    cfg = StructuredPruneConfig(heads_fraction=s["heads"], ffn_fraction=s["ffn"], importance_batches=s["imp"])
    imp = taylor_importance(model, importance_batches(tok, pool, cfg.importance_batches, cfg.batch_size, 128, cfg.seed))
    n = imp[0].shape[1]
    print("head importance per layer (sum):", [round(float(x), 1) for x in imp[0].sum(1)])
    for norm in (False, True):
        heads, _ = select_units(*imp, dataclasses.replace(cfg, normalize_heads=norm))
        print(f"hnorm={int(norm)}: heads left per layer", [n - len(heads.get(i, [])) for i in range(imp[0].shape[0])])
    print("FFN importance per layer (sum):", [round(float(x.sum()), 1) for x in imp[1]])
    _, keep = select_units(*imp, dataclasses.replace(cfg, ffn_ranking="global"))
    print("fglob=1: FFN neurons left per layer", [len(k) for k in keep])
    return 0


def kd_run(teacher, tok, pool, data, kd_logits, s: dict, cfg, variant_logits: dict):
    """The student of setting ``s`` built and trained by KD on ``data`` (the transfer rows, their teacher
    ``kd_logits``) as the recipe step would; ``variant_logits`` caches the teacher's labels of each set of variants."""
    base = data
    model, layers, gradual = student(teacher, tok, pool, s)
    all_logits = kd_logits
    kd_logits = None if s["hidden"] else kd_logits
    if cfg.augment:  # as training.kd_finetune does: the subset, its variants with the teacher's logits, one pass
        idx, key = kd_subset(data.texts, cfg), variants_key(s["transfer"], cfg)
        data, variants, cfg = kd_set(data, idx, cfg, teacher, tok)
        if kd_logits is not None:  # the teacher labels each set of variants once per sweep (rows differing in loss share it)
            if key not in variant_logits:
                variant_logits[key] = teacher_logits_for(teacher, tok, variants.texts)
            kd_logits = torch.cat([kd_logits[slice(None) if idx is None else idx], variant_logits[key]])
    if not s["kd"]:
        trained = model
    elif gradual:  # pruning happens inside the KD loop, as the recipe step runs it
        def train(on_step, after_step):
            distill(teacher, model, data, cfg, tok, kd_logits, 128, list(layers), on_step, after_step)

        trained, _ = structured_prune(model, *gradual, train)
    else:
        trained = distill(teacher, model, data, cfg, tok, kd_logits, 128, list(layers))
    if s["kind"] == "tiny":
        trained = narrow_tiny(trained, teacher, tok, pool, base, all_logits, s)
    return trained


def measure(trained, teacher, tok, dev, teacher_pred, teacher_acc, s: dict, work: Path, noisy) -> dict:
    """Dev accuracy and agreement with the teacher in PyTorch, the sides kept on the ``noisy`` slice ((noisy dev
    texts, the teacher's predictions on them); ``kept``), and with ``speed`` the fused int8 graph's speed
    against the teacher's plain int8 graph, its accuracy and its sides kept on the noisy slice as served."""
    texts, noisy_teacher = noisy
    out = {"dev_accuracy": accuracy(trained, tok, dev), "teacher_dev_accuracy": teacher_acc,
           "dev_agreement": float((predictions(trained, tok, dev) == teacher_pred).float().mean()),
           "noisy": kept(predictions(trained, tok, type(dev)(texts, dev.labels)), noisy_teacher)}
    if s["speed"]:
        out["teacher_int8_ms"], _, _ = int8_ms(teacher, tok, dev.texts[:50], work, "teacher-int8", fused=False)
        out["student_fused_int8_ms"], out["student_fused_int8_dev_accuracy"], served = int8_ms(
            trained, tok, dev.texts[:50], work, "student-int8", fused=True, dev=dev, noisy=texts)
        out["noisy_served"] = kept(served, noisy_teacher)
    return out


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="+")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--teacher-samples", type=int, default=32000)
    ap.add_argument("--work", default="bench-out/student-sweep")
    ap.add_argument("--json", default="bench-out/student_sweep.json")
    ap.add_argument("--heads-left", action="store_true", help="print the heads each layer keeps under the first setting's "
                    "heads fraction, raw and normalized ranking (hnorm=0/1), on the cached teacher, and exit")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool, dev = dev_split(read_file(args.data, "sentence", "label"))
    teacher, tok = teacher_for(pool, work, args.teacher_samples)
    if args.heads_left:
        return heads_left(teacher, tok, pool, parse(args.settings[0]))
    teacher_acc = accuracy(teacher, tok, dev)
    teacher_pred = predictions(teacher, tok, dev)
    noisy_texts = user_noise(dev.texts)
    noisy = (noisy_texts, predictions(teacher, tok, type(dev)(noisy_texts, dev.labels)))
    cache = work / f"pool-logits-{args.teacher_samples}.pt"
    if cache.is_file():
        logits = torch.load(cache)
    else:
        logits = teacher_logits_for(teacher, tok, pool.texts)
        torch.save(logits, cache)
    seen = set(random.Random(0).sample(range(len(pool)), args.teacher_samples))  # the teacher's rows (TextData.split)
    transfer = {"pool": list(range(len(pool))), "train": sorted(seen), "unused": [i for i in range(len(pool)) if i not in seen]}
    print(f"pool {len(pool)} phrases, dev {len(dev)} training sentences; teacher dev accuracy {teacher_acc:.4f}; "
          f"teacher positive on {float(teacher_pred.float().mean()):.3f} of dev, {float(noisy[1].float().mean()):.3f} of noisy dev")
    rows, variant_logits, kd_runs = [], {}, {}
    for spec in args.settings:
        s = parse(spec)
        kd_key = json.dumps({k: v for k, v in s.items() if k not in ("lsteps", "llr", "speed")}, sort_keys=True)
        cfg = DistillConfig(num_layers=1, epochs=s["epochs"], train_samples=s["samples"], learning_rate=s["lr"],
                            alpha=s["alpha"], temperature=s["T"], hidden_weight=s["hidden"], seed=s["seed"],
                            dropout=None if s["dropout"] < 0 else s["dropout"], precision=s["precision"], batch_size=s["batch"],
                            min_words=s["minw"], augment=s["aug"], augment_words=s["augw"], kd_loss=s["loss"],
                            freeze_layers=s["freeze"], ema=s["ema"], label_steps=s["lsteps"], label_learning_rate=s["llr"])
        rows_ = transfer[s["transfer"]]
        base = type(pool)([pool.texts[i] for i in rows_], [pool.labels[i] for i in rows_])
        if kd_key in kd_runs:  # the same KD run, another label fine-tune after it
            trained, seconds = copy.deepcopy(kd_runs[kd_key][0]), kd_runs[kd_key][1]
        else:
            t0 = time.perf_counter()
            trained = kd_run(teacher, tok, pool, base, logits[rows_], s, cfg, variant_logits)
            seconds = time.perf_counter() - t0
            if s["lsteps"]:
                kd_runs[kd_key] = (copy.deepcopy(trained), seconds)
        row = {"setting": spec, **s}
        if s["lsteps"]:
            row["before_label"] = measure(trained, teacher, tok, dev, teacher_pred, teacher_acc, s, work, noisy)
            t0 = time.perf_counter()
            trained = label_finetune(trained, base, kd_subset(base.texts, cfg), cfg, tok, 128)
            row["label_s"] = round(time.perf_counter() - t0, 1)
        row.update({"train_s": round(seconds, 1), **measure(trained, teacher, tok, dev, teacher_pred, teacher_acc, s, work, noisy)})
        rows.append(row)
        speed = ""
        if s["speed"]:
            speed = (f"  int8 {row['student_fused_int8_ms']:.2f} ms = {row['teacher_int8_ms'] / row['student_fused_int8_ms']:.2f}x "
                     f"Optimum int8; fused int8 dev accuracy {row['student_fused_int8_dev_accuracy']:.4f}")
        before = ""
        if s["lsteps"]:
            b = row["before_label"]
            before = (f"  [before the label fine-tune ({row['label_s']:.0f} s): dev {b['dev_accuracy']:.4f}, agreement "
                      f"{b['dev_agreement']:.4f}" + (f", served {b['student_fused_int8_dev_accuracy']:.4f}" if s["speed"] else "") + "]")
        acc, agree, nz = row["dev_accuracy"], row["dev_agreement"], row["noisy"]
        served = row.get("noisy_served")
        noise = (f"  noisy: positives kept {nz['positives_kept']:.3f}, negatives {nz['negatives_kept']:.3f}, balanced "
                 f"{nz['balanced']:.3f}" + (f" (served {served['positives_kept']:.3f} / {served['negatives_kept']:.3f} / "
                                           f"{served['balanced']:.3f})" if served else ""))
        print(f"{spec:50s} train {seconds:6.1f} s  dev accuracy {acc:.4f} ({(acc - teacher_acc) * 100:+.1f} pt)  "
              f"agreement {agree:.4f}{speed}{noise}{before}", flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
                                               "pool": len(pool), "dev": len(dev), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
