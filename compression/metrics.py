"""Honest measurement of one runner: quality, latency, throughput, size, parameters.

Every row (the PyTorch teacher included) is measured by the same code with the same
thread count, warm-up and sentences, so ratios between rows mean something. Pure
numpy at import: the app uses the quality and softmax helpers without torch.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .config import EvalConfig
from .machine import cpu_flags, cpu_name
from .runtime import Runner, is_multi_label, time_forward, timed_forward, timed_logits



def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def predictions(logits: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Class ids (argmax), or a 0/1 matrix for multi-label models (sigmoid > 0.5)."""
    return (logits > 0).astype(np.int64) if multi_label else logits.argmax(-1)


def same_prediction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-example equality of two prediction arrays (whole label sets for multi-label)."""
    eq = a == b
    return eq.all(-1) if eq.ndim > 1 else eq


def balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean of the per-class recalls over the classes present in ``y`` (robust to class imbalance)."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def quality(logits: np.ndarray, labels, reference: np.ndarray | None = None, multi_label: bool = False) -> dict:
    """accuracy, F1, loss (+ balanced accuracy, agreement).

    Single-label: accuracy, F1 of the positive class (2 labels) or macro F1, cross-entropy,
    balanced accuracy. Multi-label (sigmoid outputs, multi-hot labels): exact-match accuracy,
    micro F1, binary cross-entropy. Agreement: share of examples predicted as ``reference``.
    """
    y = np.asarray(labels)
    pred = predictions(logits, multi_label)
    if multi_label:
        tp = np.sum((pred == 1) & (y == 1))
        denom = np.sum(pred == 1) + np.sum(y == 1)
        bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
        out = {"accuracy": float(np.mean(same_prediction(pred, y))), "f1": float(2 * tp / denom) if denom else 0.0,
               "loss": float(bce.mean())}
    else:
        logp = np.log(np.clip(softmax(logits), 1e-30, None))
        classes = [1] if logits.shape[1] == 2 else range(logits.shape[1])
        f1s = []
        for c in classes:
            tp = np.sum((pred == c) & (y == c))
            denom = np.sum(pred == c) + np.sum(y == c)
            f1s.append(2 * tp / denom if denom else 0.0)
        out = {"accuracy": float(np.mean(pred == y)), "f1": float(np.mean(f1s)), "loss": float(-logp[np.arange(len(y)), y].mean()),
               "balanced_accuracy": balanced_accuracy(pred, y)}
    if reference is not None:
        out["agreement"] = float(np.mean(same_prediction(pred, reference)))
    return out


def latency(runner: Runner, texts: list[str], cfg: EvalConfig) -> dict:
    """Batch-1 latency in ms (tokenization excluded, so rows compare the model alone)."""
    encoded = [runner.encode([t]) for t in texts[: cfg.latency_sentences]]
    return {**_latency_stats(time_forward(runner, encoded, cfg.latency_runs, cfg.warmup)), "latency_timing": "alone"}


def _latency_stats(times: list[float]) -> dict:
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p95_ms": float(np.percentile(times, 95)),
            "latency_mean_ms": float(np.mean(times))}


def interleaved_latency(runners: dict[str, Runner], texts: list[str], cfg: EvalConfig) -> dict[str, dict]:
    """Batch-1 latency of every runner timed at one moment (tokenization excluded).

    Each runner gets ``cfg.warmup`` untimed and ``cfg.latency_runs`` timed forwards over the first
    ``cfg.latency_sentences`` sentences, split into ``cfg.latency_rounds`` rounds; every round visits
    every runner, starting one further along each time, so a machine that slows down for a while
    slows every row alike. Per runner: p50/p95/mean over all its timings and the lowest and highest
    p50 of a single round (how far one round's figure moves)."""
    names = list(runners)
    encoded = {n: [runners[n].encode([t]) for t in texts[: cfg.latency_sentences]] for n in names}
    for n in names:
        time_forward(runners[n], encoded[n], 0, cfg.warmup)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds: dict[str, list[float]] = {n: [] for n in names}
    n_rounds = min(cfg.latency_rounds, cfg.latency_runs)
    per_round = -(-cfg.latency_runs // n_rounds)
    for k in range(n_rounds):
        for n in names[k % len(names):] + names[: k % len(names)]:
            todo = min(per_round, cfg.latency_runs - len(times[n]))
            if todo <= 0:
                continue
            enc = encoded[n]
            start = len(times[n])  # carry on through the sentences where the last round stopped
            ms = [timed_forward(runners[n], enc[(start + i) % len(enc)])[1] for i in range(todo)]
            times[n] += ms
            rounds[n].append(float(np.median(ms)))
    return {n: {**_latency_stats(times[n]), "latency_p50_round_range_ms": [min(rounds[n]), max(rounds[n])],
                "latency_timing": f"interleaved: {len(names)} rows, {len(rounds[n])} rounds"} for n in names}


def served(runner: Runner, texts: list[str], threads: int) -> np.ndarray:
    """Every sentence's logits as a one-sentence request gets them (``Runner.served_logits``),
    spread over ``threads`` single-thread ONNX sessions (ORT releases the GIL), or one torch
    runner on ``threads`` threads: accuracy only, so any thread count gives the same answers."""
    if runner.kind != "onnx" or threads <= 1 or len(texts) < 64:
        return runner.with_threads(threads).served_logits(texts)
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(texts) // threads)
    chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
    workers = [runner.with_threads(1) for _ in chunks]
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(lambda wc: wc[0].served_logits(wc[1]), zip(workers, chunks)))
    return np.concatenate(parts)


def _bootstrap_means(per_item: np.ndarray, resamples: int, rng) -> np.ndarray:
    out, n = [], len(per_item)
    for done in range(0, resamples, 256):  # chunks bound the index matrix to 256 x n
        idx = rng.integers(0, n, (min(256, resamples - done), n))
        out.append(per_item[idx].mean(1))
    return np.concatenate(out)


def paired_difference(correct: np.ndarray, correct_ref: np.ndarray, resamples: int = 2000, seed: int = 0,
                      strata: np.ndarray | None = None) -> dict:
    """This model's accuracy minus the reference's on the same sentences, with a 95% interval
    from a paired bootstrap over sentences (fixed seed), and the sentences that flip each way.

    ``strata`` (the gold labels): the difference of *balanced* accuracies, resampled within each
    class so every resample keeps the class sizes (used for the imbalanced out-of-domain set).
    Returns {delta, ci95: [lo, hi], lost (reference right, this wrong), gained (the reverse)}."""
    c, r = np.asarray(correct, bool), np.asarray(correct_ref, bool)
    diff = c.astype(np.float64) - r.astype(np.float64)
    out = {"lost": int(np.sum(r & ~c)), "gained": int(np.sum(c & ~r))}
    rng = np.random.default_rng(seed)
    if strata is None:
        out["delta"] = float(diff.mean()) if len(diff) else 0.0
        means = _bootstrap_means(diff, resamples, rng) if resamples and len(diff) else None
    else:
        classes = [diff[strata == k] for k in np.unique(strata)]
        out["delta"] = float(np.mean([d.mean() for d in classes]))
        means = np.mean([_bootstrap_means(d, resamples, rng) for d in classes], axis=0) if resamples else None
    out["ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))] if means is not None else None
    return out


def _correct(pred: np.ndarray, labels) -> np.ndarray:
    return same_prediction(np.asarray(pred), np.asarray(labels))


def file_sizes(path: Path) -> tuple[float, float]:
    """(MB on disk, MB after gzip -6): gzip shows what sparsity buys on the wire."""
    data = Path(path).read_bytes()
    return len(data) / 1e6, len(gzip.compress(data, compresslevel=6)) / 1e6


def onnx_values(model) -> list[np.ndarray]:
    """Every initializer as the values it holds. A 4-bit table stored two to a byte (GatherBlockQuantized
    with ``bits=4`` on uint8) is unpacked to one value per entry, less its default zero point (8) when it
    has no zero points of its own, so it counts as the int4 table it is."""
    from onnx import numpy_helper

    packed = {n.input[0]: len(n.input) > 3 and bool(n.input[3]) for n in model.graph.node
              if n.op_type == "GatherBlockQuantized" and any(a.name == "bits" and a.i == 4 for a in n.attribute)}
    out = []
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if t.name in packed and a.dtype == np.uint8:
            a = np.stack([a & 0xF, a >> 4], axis=-1).reshape(*a.shape[:-1], -1).astype(np.int8)
            a = a if packed[t.name] else a - 8
        out.append(a)
    return out


def weight_stats(runner: Runner) -> tuple[int, float]:
    """(parameter count, fraction of exact zeros among matrix weights)."""
    if runner.kind == "onnx":
        import onnx

        arrays = onnx_values(onnx.load(str(runner.model_file)))
    else:
        arrays = []
        for v in runner.model.state_dict().values():
            for t in (v if isinstance(v, tuple) else (v,)):
                if hasattr(t, "is_quantized") and t.is_quantized:
                    t = t.int_repr()
                if hasattr(t, "numpy"):
                    arrays.append(t.detach().cpu().numpy())
    params = int(sum(a.size for a in arrays))
    mats = [a for a in arrays if a.ndim >= 2]
    total = sum(a.size for a in mats)
    zeros = sum(int(np.count_nonzero(a == 0)) for a in mats)
    return params, (zeros / total if total else 0.0)


def measure(runner: Runner, data, cfg: EvalConfig, reference: dict | None = None, ood=None,
            timing: bool = True) -> tuple[dict, dict]:
    """All metrics of one runner on ``data`` (TextData with labels): (metrics, predictions).
    ``timing`` False leaves batch-1 latency out, for a caller that times every row together afterwards.

    Accuracy and the out-of-domain columns (``ood``, a TextData) are measured as served
    (``served``); throughput in padded batches of ``cfg.throughput_batch`` on the first
    ``cfg.throughput_sentences`` sentences; latency at batch 1 on ``cfg.threads`` threads.
    ``reference`` (the teacher's predictions, {"eval": [...], "ood": [...]}) adds agreement and
    the paired difference to the teacher with its bootstrap interval and flip counts.
    ``predictions`` is {"eval": [...], "ood": [...]}: what the next rows are compared with."""
    multi = is_multi_label(runner.config)
    acc_threads = cfg.accuracy_threads or os.cpu_count() or 1
    logits = served(runner, data.texts, acc_threads)
    pred = predictions(logits, multi)
    ref = None if reference is None else np.asarray(reference["eval"])
    metrics = quality(logits, data.labels, ref, multi)
    preds = {"eval": pred.tolist()}
    if ref is not None:
        diff = paired_difference(_correct(pred, data.labels), _correct(ref, data.labels), cfg.bootstrap)
        metrics.update(delta_accuracy=diff["delta"], delta_accuracy_ci95=diff["ci95"], flips_lost=diff["lost"],
                       flips_gained=diff["gained"])
    if ood is not None:
        ood_logits = served(runner, ood.texts, acc_threads)
        ood_pred = predictions(ood_logits, multi)
        ood_ref = None if reference is None or reference.get("ood") is None else np.asarray(reference["ood"])
        q = quality(ood_logits, ood.labels, ood_ref, multi)
        metrics.update({f"ood_{k}": v for k, v in q.items() if k in ("accuracy", "balanced_accuracy", "agreement")})
        metrics["ood_samples"] = len(ood.texts)
        preds["ood"] = ood_pred.tolist()
        if ood_ref is not None and not multi:
            diff = paired_difference(_correct(ood_pred, ood.labels), _correct(ood_ref, ood.labels), cfg.bootstrap,
                                     strata=np.asarray(ood.labels))
            metrics.update(ood_delta_balanced_accuracy=diff["delta"], ood_delta_balanced_accuracy_ci95=diff["ci95"])
    _, metrics["throughput_per_s"] = timed_logits(runner, data.texts[: cfg.throughput_sentences], cfg.throughput_batch)
    if timing:
        metrics.update(latency(runner, data.texts, cfg))
    metrics["size_mb"], metrics["gzip_mb"] = file_sizes(runner.model_file)
    metrics["params"], metrics["sparsity"] = weight_stats(runner)
    metrics.update(eval_samples=len(data.texts), threads=cfg.threads, batch_invariant=runner.batch_invariant,
                   accuracy_batching="unpadded equal-length batches" if runner.batch_invariant else "batch 1",
                   cpu=cpu_name(), cpu_flags=cpu_flags(), cpu_count=os.cpu_count())
    return metrics, preds
