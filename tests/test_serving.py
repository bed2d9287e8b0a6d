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
    # a fresh server times each variant a few times; later requests once each
    assert {n: sum(s[0] == n for s in spans) for n in family.names} == {n: serving.WARM_REPEATS for n in family.names}
    for v in family.variants.values():
        assert v.runner.threads == 1


def test_live_latency_is_the_median_of_the_latest_requests(built, tmp_path):
    _, out, _ = built
    family = serving.load_family(_copy(out, tmp_path / "v", ["teacher", "fp32"]))
    v = family.variants["fp32"]
    for _ in range(serving.LIVE_WINDOW + 5):
        rows, _ = serving.predict(family, "a dull plot")
    assert len(v.times) == serving.LIVE_WINDOW                       # a rolling window, not every request ever
    assert rows[0]["live_ms"] == round(statistics.median(v.times), 3)
    assert rows[0]["latency_ms"] == round(v.times[-1], 3)            # this request's own time is the newest sample


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
