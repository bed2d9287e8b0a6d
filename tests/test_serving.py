"""The serving layer without Gradio: loading, live refresh, sequential timing, broken folders."""
import shutil
import statistics
import threading
import time

import numpy as np
import pytest

from compression import artifacts, serving


def _copy(out, dest, names):
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(out / name, dest / name)
    return dest


def test_each_variant_is_timed_alone_one_after_another(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "fp16", "int8-dynamic", "w4"]))
    spans, lock = [], threading.Lock()
    originals = {name: v.runner.forward for name, v in family.variants.items()}

    def timed(name):
        def forward(enc):
            start = time.perf_counter()
            result = originals[name](enc)
            with lock:
                spans.append((name, start, time.perf_counter(), threading.get_ident()))
            return result
        return forward

    for name, v in family.variants.items():
        v.runner.forward = timed(name)
    rows, _ = serving.predict(family, "a charming film")
    assert [r["variant"] for r in rows] == family.names and family.names[0] == "fp32"
    spans.sort(key=lambda s: s[1])
    for (a, _, end, _), (b, start, _, _) in zip(spans, spans[1:]):
        assert end <= start, f"{a} and {b} ran at the same time"   # never two models at once
    assert len({s[3] for s in spans}) == 1                          # one after another, on the request's thread
    assert {n: sum(s[0] == n for s in spans) for n in family.names} == {n: 1 for n in family.names}  # one run answers
    for v in family.variants.values():
        assert v.runner.threads == 1


def _record(family, spans):
    """Wrap every runner's forward to record (variant, start, end, thread name)."""
    lock = threading.Lock()
    for name, v in family.variants.items():
        def forward(enc, _orig=v.runner.forward, _name=name):
            start = time.perf_counter()
            result = _orig(enc)
            with lock:
                spans.append((_name, start, time.perf_counter(), threading.current_thread().name))
            return result
        v.runner.forward = forward


def test_live_latency_is_the_median_of_the_latest_warm_samples(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "int8-dynamic"]))
    v = family.variants["fp32"]
    rows, _ = serving.predict(family, "a dull plot")
    assert rows[0]["live_ms"] == rows[0]["latency_ms"] == round(v.times[-1], 3)  # no warm sample yet: the request's run
    spans, seen = [], []
    _record(family, spans)
    inner = v.runner.forward
    v.runner.forward = lambda enc: seen.append(int(enc["input_ids"].shape[1])) or inner(enc)
    for text in ["a dull plot , really", "a charming , funny and warm film about two brothers"]:
        serving.predict(family, text)
    for _ in range(serving.LIVE_WINDOW):
        assert serving.sample_warm(family) == family.names
    # each sample: one untimed pass, then WARM_RUNS timed ones, back to back, one variant at a time
    per = serving.WARM_RUNS + 1
    names = [s[0] for s in spans][2 * len(family.names):]           # after the two requests
    assert names[:2 * per] == ["fp32"] * per + ["int8-dynamic"] * per
    lengths = seen[2:2 + per]                                       # the first sweep's passes of fp32
    assert lengths[1:] == seen[:2] and len(set(lengths)) == 3      # warm-up on the oldest, timed on the two newer ones
    assert len(v.warm) == serving.LIVE_WINDOW                       # a rolling window, not every sample ever
    rows, _ = serving.predict(family, "a dull plot")
    assert rows[0]["live_ms"] == round(statistics.median(v.warm), 3)
    assert rows[0]["latency_ms"] == round(v.times[-1], 3)            # this request's own run, shown beside it


def test_warm_timer_yields_to_requests_and_finishes_its_sentence(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "fp16", "int8-dynamic"]))
    serving.predict(family, "a charming film")
    with family.gate:                                                # a request is running
        assert serving.sample_warm(family) == []
    assert all(not v.warm for v in family.variants.values())
    calls = []
    fp16 = family.variants["fp16"].runner
    original = fp16.forward

    def request_arrives(enc):                                        # a request comes in during fp16's first pass
        calls.append("fp16")
        if len(calls) == 1:
            family.gate.active += 1
        return original(enc)

    fp16.forward = request_arrives
    assert serving.sample_warm(family) == ["fp32"]                   # stopped before fp16's next pass
    family.gate.active -= 1
    swept = family.sweep_inputs
    serving.predict(family, "a much longer sentence about a film that went on for far too long , sadly")
    assert serving.sample_warm(family) == ["fp16", "int8-dynamic"]   # fp16 again from its warm-up, then the rest
    assert len(calls) == 1 + 1 + serving.WARM_RUNS + 1                 # interrupted pass, the request, a whole sample
    assert family.sweep_inputs is swept                              # on the sentences the sweep began with
    assert serving.sample_warm(family) == family.names               # a new sweep on the latest sentence
    assert family.sweep_inputs is not swept and family.sweep_inputs == list(family.recent)  # the latest two sentences now
    assert [len(family.variants[n].warm) for n in ("fp32", "fp16", "int8-dynamic")] == [2 * serving.WARM_RUNS] * 3


def test_warm_timer_never_runs_beside_a_request(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "fp16", "int8-dynamic", "w4"]))
    spans = []
    _record(family, spans)
    serving.start_warm_timer(family)
    for text in ["a charming film", "a dull plot", "not bad at all"] * 4:
        serving.predict(family, text)
        time.sleep(0.02)                                             # the timer starts, the next request interrupts it
    deadline = time.time() + 10
    while any(not v.warm for v in family.variants.values()) and time.time() < deadline:
        time.sleep(0.05)
    timer = [s for s in spans if s[3] == "warm-timer"]
    asked = [s for s in spans if s[3] != "warm-timer"]
    assert timer and all(v.warm for v in family.variants.values())
    for _, a0, a1, _ in asked:
        for name, t0, t1, _ in timer:
            assert t1 <= a0 or t0 >= a1, f"the warm timer ran {name} during a request"


def test_refresh_adds_variants_as_their_folders_finish(built, tmp_path):
    _, out, _ = built
    folder = _copy(out, tmp_path / "v", ["teacher", "fp32"])
    family = serving.load_family(folder)
    assert family.names == ["fp32"] and family.references == {"teacher": "PyTorch reference, not served"}
    assert serving.refresh(family) is False                        # nothing new: nothing reloaded
    version = family.version
    fp32_runner = family.variants["fp32"].runner
    shutil.copytree(out / "int8-dynamic", folder / "int8-dynamic")
    (folder / ".tmp-fp16-123").mkdir()                              # a folder still being built is not a variant
    assert serving.refresh(family) is True
    assert family.version == version + 1                           # what each open page compares with its own
    assert serving.refresh(family) is False and family.version == version + 1
    assert family.names == ["fp32", "int8-dynamic"]
    assert family.variants["fp32"].runner is fp32_runner           # loaded variants keep their sessions
    rows, _ = serving.predict(family, "superb")
    assert {r["variant"] for r in rows} == {"fp32", "int8-dynamic"}
    assert {r["variant"] for r in family.rows} == {"teacher", "fp32", "int8-dynamic"}
    assert family.recommended in {"fp32", "int8-dynamic"}         # the report's rule on the rows so far


def test_broken_folders_are_listed_with_one_line_and_the_rest_served(built, tmp_path):
    _, out, _ = built
    folder = _copy(out, tmp_path / "v", ["teacher", "fp32", "int8-dynamic", "fp16"])
    data = (folder / "int8-dynamic" / "model.onnx").read_bytes()
    (folder / "int8-dynamic" / "model.onnx").write_bytes(data[: len(data) // 2])   # truncated by a full disk
    (folder / "fp16" / "tokenizer.json").write_text("{ not json")
    family = serving.load_family(folder)
    assert family.names == ["fp32"]
    for name in ("int8-dynamic", "fp16"):
        reason = family.unavailable[name]
        assert "\n" not in reason and str(folder / name) in reason and "rebuild this variant" in reason
    rows, _ = serving.predict(family, "superb")
    assert [r["variant"] for r in rows] == ["fp32"]


def test_an_empty_family_answers_with_a_note(tmp_path):
    family = serving.load_family(tmp_path / "nothing-here")
    assert family.names == [] and family.rows == []
    rows, notes = serving.predict(family, "hello")
    assert rows == [] and notes == ["No variant is ready to answer yet."]
    assert serving.predict(family, "  ")[1] == ["Please type a sentence to classify (the input was empty)."]


def test_batch_predictions_are_the_served_ones(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "int8-dynamic"]))
    texts = ["superb film", "dull", "a very boring plot indeed", "fine"]
    rows, matrix, names, flips = serving.run_batch(family, texts, [1, 0, 0, 1])
    runner = family.variants["int8-dynamic"].runner
    alone = np.concatenate([runner.forward(runner.encode([t])) for t in texts]).argmax(-1)
    acc = {r["variant"]: r["accuracy"] for r in rows}
    assert acc["int8-dynamic"] == pytest.approx(np.mean(alone == np.array([1, 0, 0, 1])))
    assert matrix[0][0] == names[0] and matrix[0][1] == 1.0
    assert all(r["batch32_throughput_per_s"] > 0 for r in rows)


def test_family_rows_name_the_data_they_were_measured_on(built, tmp_path):
    _, out, _ = built
    folder = _copy(out, tmp_path / "v", ["teacher", "fp32"])
    shutil.copy(out / artifacts.RECIPE, folder / artifacts.RECIPE)
    family = serving.load_family(folder)
    assert family.data["name"] == "synthetic reviews" and family.data["ood_name"] == "ood.tsv"


def test_a_request_waits_for_one_warm_pass_at_most(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "fp16", "int8-dynamic"]))
    serving.predict(family, "a charming film")
    starts = []
    for v in family.variants.values():
        def slow(enc, _orig=v.runner.forward):
            starts.append(time.perf_counter())
            time.sleep(0.03)                                         # a pass long enough to arrive during it
            return _orig(enc)
        v.runner.forward = slow
    timer = threading.Thread(target=serving.sample_warm, args=(family,))
    timer.start()
    while not starts:
        time.sleep(0.001)
    arrived = time.perf_counter()                                   # a request arrives while a pass runs
    with family.gate:
        entered = time.perf_counter()
    timer.join()
    assert [t for t in starts if t > arrived] == []                 # the timer started no pass after it arrived
    assert entered - arrived < 0.03 + 0.02                          # it waited for the pass in flight only
    assert len(starts) < len(family.names) * (serving.WARM_RUNS + 1)  # the sweep stopped for it


def test_the_warm_timer_starts_warm_before_the_first_request(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32", "fp16", "int8-dynamic"]))
    serving.start_warm_timer(family, ["not bad at all", "a gripping , beautifully acted film .", "a dull plot"])
    deadline = time.time() + 10
    while any(len(v.warm) < serving.WARM_RUNS for v in family.variants.values()) and time.time() < deadline:
        time.sleep(0.02)
    rows, _ = serving.predict(family, "a charming film")            # the first request ever
    for r in rows:
        v = family.variants[r["variant"]]
        assert len(v.times) == 1                                      # (the timer may add passes after the answer)
        assert r["live_ms"] == round(statistics.median(list(v.warm)[:serving.WARM_RUNS]), 3)  # warm, not this first run


def _row(name, built_as, accuracy, ms, mb, steps):
    return {"variant": name, "built_as": built_as, "accuracy": accuracy, "latency_p50_ms": ms, "size_mb": mb,
            "steps": steps, "format": "pytorch" if built_as == "teacher" else "onnx"}


def test_a_space_recommends_by_the_names_rows_were_built_under():
    """A Space shows rows under their repos' names; the report's rule still finds the teacher (its accuracy bar)
    and Optimum's route by the build's own names, so it picks the fast student within 1 pt, not the most accurate row."""
    rows = [_row("x-teacher", "teacher", 0.90, 15.0, 91.0, []),
            _row("x-fp16", "fp16", 0.90, 7.0, 46.0, ["export", "fp16"]),
            _row("x-int8-dynamic", "int8-dynamic", 0.895, 3.0, 23.0, ["export", "quantize_dynamic"]),
            _row("x-student", "pruned-fused-int8", 0.893, 1.4, 11.0, ["prune_structured", "fuse", "quantize_dynamic"])]
    assert serving.recommend(rows) == "x-student"
    # the same rows under the build's own names give the same answer, shown under the repo's name above
    assert serving.recommend([{**r, "variant": r["built_as"]} for r in rows]) == "pruned-fused-int8"
    # without the build's names the teacher is not found and the rule falls back to the most accurate row
    assert serving.recommend([{k: v for k, v in r.items() if k != "built_as"} for r in rows]) == "x-fp16"


def test_a_space_applies_the_recipes_accuracy_rule():
    """The recipe saved beside every variant says how much accuracy the recommended row may lose: a
    Space (rows without the report's flag) reads it, so it recommends what the build's report did."""
    rows = [_row("x-teacher", "teacher", 0.90, 15.0, 91.0, []),
            _row("x-int8-dynamic", "int8-dynamic", 0.895, 3.0, 23.0, ["export", "quantize_dynamic"]),
            _row("x-student", "pruned-fused-int8", 0.8905, 1.4, 11.0, ["prune_structured", "fuse", "quantize_dynamic"])]
    assert serving.accuracy_rule(None) == (0.01, "absolute")
    relative = serving.accuracy_rule({"evaluation": {"recommend_tolerance": 0.01, "recommend_criterion": "relative"}})
    assert relative == (0.01, "relative")
    assert serving.accuracy_rule({"evaluation": {"recommend_criterion": "percent"}}) == (0.01, "absolute")  # served, not crashed
    assert serving.accuracy_rule({"evaluation": {"recommend_tolerance": "lots"}}) == (0.01, "absolute")
    family = serving.VariantFamily(rows=[dict(r) for r in rows])
    serving._settle(family)
    assert family.recommended == "x-student"            # 0.95 pt under: within 1 point
    family.rule = relative
    serving._settle(family)
    assert family.recommended == "x-int8-dynamic"       # but under 99% of 0.90 (0.891): the student is out
