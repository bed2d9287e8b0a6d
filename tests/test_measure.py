"""Numbers a user can trust: accuracy as served (batch 1), paired intervals, and what the report says."""
import json

import numpy as np
import pytest

from compression.artifacts import open_onnx
from compression.metrics import paired_difference
from conftest import synthetic

# lengths from 1 to ~40 tokens, several sentences per length: batches of equal lengths really form
TEXTS = [t for t, _ in synthetic(60, 21)] + ["good", "bad film", "a " * 30 + "good", "dull " * 12, "fine fine fine"]
ONNX_ROWS = ("fp32", "fp16", "int8-dynamic", "int8-emb4", "int8-static", "w4")


def _one_by_one(runner, texts):
    return np.concatenate([runner.forward(runner.encode([t])) for t in texts])


@pytest.mark.parametrize("name", ONNX_ROWS)
def test_served_logits_equal_batch_1_for_every_format(built, name):
    """Whatever batching accuracy measurement uses must give every sentence the logits it gets alone."""
    _, out, _ = built
    runner = open_onnx(out / name)
    alone = _one_by_one(runner, TEXTS)
    np.testing.assert_allclose(runner.served_logits(TEXTS), alone, atol=1e-4, rtol=0)
    # dynamic int8 scales activations per batch: only those graphs are measured one sentence at a time
    assert runner.batch_invariant == (name not in ("int8-dynamic", "int8-emb4"))
    if runner.batch_invariant:  # the unpadded equal-length batches really are batches here
        assert len(TEXTS) > len(set(runner.lengths(TEXTS)))


def test_torch_teacher_served_logits_equal_batch_1(built):
    from compression.loader import load_runner

    _, out, _ = built
    runner = load_runner(out / "teacher")
    assert runner.batch_invariant
    np.testing.assert_allclose(runner.served_logits(TEXTS), _one_by_one(runner, TEXTS), atol=1e-4, rtol=0)
    int8 = load_runner(out / "torch-int8")
    assert not int8.batch_invariant  # torch's dynamic int8 Linear scales over the batch too


def test_report_accuracy_is_a_batch_1_measurement_to_the_sentence(built, tiny_data):
    """Re-measure every ONNX row with plain onnxruntime + the folder's tokenizer, one sentence per run."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from compression.data import read_file

    _, out, _ = built
    ev = read_file(tiny_data / "validation.tsv", "sentence", "label")
    report = {r["variant"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    for name in ONNX_ROWS:
        tok = Tokenizer.from_file(str(out / name / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(32)
        sess = ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])
        inputs = {i.name for i in sess.get_inputs()}
        pred = []
        for text in ev.texts:
            e = tok.encode(text)
            feed = {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
                    "token_type_ids": np.array([e.type_ids])}
            pred.append(int(sess.run(None, {k: v for k, v in feed.items() if k in inputs})[0].argmax()))
        stored = json.loads((out / name / "predictions.json").read_text())["eval"]
        assert stored == pred, name
        assert report[name]["accuracy"] == pytest.approx(np.mean(np.array(pred) == np.array(ev.labels)), abs=1e-12), name


def test_paired_bootstrap_interval_on_a_known_case():
    """1,000 sentences; the reference gets all right, the model loses 100 and gains none: the
    difference is -0.1 with a sampling sd of sqrt(0.09 / 1000) = 0.0095, so the 95% interval is
    -0.1 +- 1.96 x 0.0095 (normal approximation of the bootstrap)."""
    ref = np.ones(1000, bool)
    model = ref.copy()
    model[::10] = False
    d = paired_difference(model, ref, resamples=4000, seed=0)
    assert d["delta"] == pytest.approx(-0.1) and d["lost"] == 100 and d["gained"] == 0
    half = 1.96 * np.sqrt(0.09 / 1000)
    assert d["ci95"][0] == pytest.approx(-0.1 - half, abs=0.003) and d["ci95"][1] == pytest.approx(-0.1 + half, abs=0.003)
    assert paired_difference(model, ref, resamples=4000, seed=0) == d  # fixed seed: the same interval every time
    same = paired_difference(ref, ref, resamples=500)
    assert same["delta"] == 0 and same["ci95"] == [0.0, 0.0] and same["lost"] == same["gained"] == 0
    # flips that cancel: same accuracy, an interval around 0 that is wide, not a point
    swap = ref.copy()
    swap[:50], ref2 = False, ref.copy()
    ref2[50:100] = False
    d = paired_difference(swap, ref2, resamples=2000)
    assert d["delta"] == 0 and d["lost"] == 50 and d["gained"] == 50 and d["ci95"][0] < -0.01 < 0.01 < d["ci95"][1]


def test_stratified_interval_is_for_balanced_accuracy():
    """900 negatives all right in both; 100 positives: the reference gets 80 right, the model 60.
    Balanced accuracy differs by (0.6 - 0.8) / 2 = -0.10, though plain accuracy differs by only -0.02."""
    y = np.array([0] * 900 + [1] * 100)
    ref = np.ones(1000, bool)
    ref[900 + 80:] = False
    model = ref.copy()
    model[900 + 60:900 + 80] = False
    d = paired_difference(model, ref, resamples=2000, strata=y)
    assert d["delta"] == pytest.approx(-0.10) and d["lost"] == 20
    assert d["ci95"][0] < -0.10 < d["ci95"][1] and d["ci95"][1] < 0


def test_every_row_carries_its_difference_to_the_teacher(built):
    _, out, summary = built
    rows = {r["variant"]: r for r in summary["rows"]}
    teacher = json.loads((out / "teacher" / "predictions.json").read_text())["eval"]
    for name, r in rows.items():
        pred = json.loads((out / name / "predictions.json").read_text())["eval"]
        assert r["agreement"] == pytest.approx(np.mean(np.array(pred) == np.array(teacher)))
        lo, hi = r["delta_accuracy_ci95"]
        assert lo <= r["delta_accuracy"] <= hi
        assert r["delta_accuracy"] == pytest.approx(r["accuracy"] - rows["teacher"]["accuracy"])
        assert r["flips_gained"] - r["flips_lost"] == round(r["delta_accuracy"] * r["eval_samples"])
    md = (out / "report.md").read_text()
    assert "Δ vs teacher [95% CI], pt" in md and "flips −/+" in md and "measured as the model is served" in md


class _SlowRunner:
    """A stand-in runner whose forward advances the shared machine's clock by ``ms`` times its
    slowdown, logging each call: a fake clock, so the timings do not depend on how busy the box is."""

    def __init__(self, name, ms, calls, machine):
        self.name, self.ms, self.calls, self.machine = name, ms, calls, machine

    def encode(self, texts):
        return {"text": texts[0]}

    def forward(self, enc):
        self.calls.append(self.name)
        self.machine["forwards"] += 1
        slow = 3.0 if self.machine["forwards"] > self.machine["slow_after"] else 1.0
        self.machine["clock"] += self.ms * slow / 1e3
        return np.zeros((1, 2), np.float32)


def test_interleaved_timing_visits_every_row_each_round_and_keeps_ratios_when_the_machine_slows(monkeypatch):
    from types import SimpleNamespace

    from compression import runtime
    from compression.config import EvalConfig
    from compression.metrics import interleaved_latency

    cfg = EvalConfig(latency_runs=20, warmup=2, latency_sentences=4, latency_rounds=5)
    calls, machine = [], {"forwards": 0, "slow_after": 2 * 2 + 2 * 14, "clock": 0.0}  # warm-ups, then 70% of the timed runs
    # the timer reads the machine's clock (only runtime's view of `time`; sleeping jittered by 1 ms under CI load)
    monkeypatch.setattr(runtime, "time", SimpleNamespace(perf_counter=lambda: machine["clock"]))
    runners = {"a": _SlowRunner("a", 2.0, calls, machine), "b": _SlowRunner("b", 4.0, calls, machine)}
    out = interleaved_latency(runners, ["w x", "y", "z z", "q"], cfg)
    timed = calls[4:]
    assert calls[:4] == ["a", "a", "b", "b"] and timed.count("a") == timed.count("b") == 20
    rounds = [timed[i:i + 8] for i in range(0, 40, 8)]  # 5 rounds of 4 runs per row
    assert [r[0] for r in rounds] == ["a", "b", "a", "b", "a"]  # each round starts one row further on
    assert all(sorted(set(r)) == ["a", "b"] for r in rounds)
    # timed one after the other, b would have met the slow machine on most of its runs; interleaved, both
    # rows meet it in the last rounds alike and the 2x between them holds
    ratio = out["b"]["latency_p50_ms"] / out["a"]["latency_p50_ms"]
    assert 1.6 < ratio < 2.6, out
    for row in out.values():
        low, high = row["latency_p50_round_range_ms"]
        assert low <= row["latency_p50_ms"] <= high and high > 2 * low  # the slow rounds show in the range
        assert row["latency_timing"] == "interleaved: 2 rows, 5 rounds"


def test_a_build_times_every_row_together_at_the_end(built):
    from compression import artifacts

    _, out, _ = built
    rows = [artifacts.read_metrics(f) for f in artifacts.list_variants(out)]
    assert len(rows) > 3
    for m in rows:
        assert m["latency_timing"] == f"interleaved: {len(rows)} rows, 10 rounds", m["variant"]
        low, high = m["latency_p50_round_range_ms"]
        assert low <= m["latency_p50_ms"] <= high
    report = json.loads((out / artifacts.REPORT).read_text())
    teacher = next(r for r in report["rows"] if r["variant"] == artifacts.TEACHER)
    for r in report["rows"]:
        assert r["speedup_vs_teacher"] == pytest.approx(teacher["latency_p50_ms"] / r["latency_p50_ms"])
