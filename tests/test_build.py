"""Build pipeline: resume, atomic folders, and early failures on bad input."""
import json
import shutil
import subprocess
import sys

import pytest

from compression.build import build
from compression.recipe import Recipe
from compression.errors import BuildError, ModelError
from compression.errors import DataError
from compression.artifacts import is_finished
from conftest import REPO, finished_stamps, tiny_recipe_dict, write_tsv

REQUIRED_FILES = {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "compression_config.json", "metrics.json"}


def test_every_variant_folder_is_self_contained(built):
    recipe, out, summary = built
    for spec in recipe.variants:
        files = {p.name for p in (out / spec.name).iterdir()}
        if spec.name == "torch-int8":
            assert {"pytorch_int8.pt", "config.json", "metrics.json"} <= files
        else:
            assert REQUIRED_FILES <= files, spec.name
        metrics = json.loads((out / spec.name / "metrics.json").read_text())
        for key in ("accuracy", "f1", "loss", "agreement", "latency_p50_ms", "latency_p95_ms", "throughput_per_s",
                    "size_mb", "gzip_mb", "params", "sparsity"):
            assert key in metrics, (spec.name, key)
    assert not list(out.glob(".tmp-*"))
    teacher = json.loads((out / "teacher" / "metrics.json").read_text())
    assert teacher["accuracy"] >= 0.9, "the tiny teacher should learn the synthetic task"


def test_resume_skips_finished_and_rebuilds_broken(built, tmp_path, tiny_model, tiny_data, caplog):
    recipe, out, _ = built
    work = tmp_path / "out"
    shutil.copytree(out, work)
    stamps = finished_stamps(work)
    (work / "fp16" / "metrics.json").write_text("{ truncated")   # as if killed mid-write
    (work / ".tmp-int8-dynamic-999").mkdir()                     # leftover of a killed build
    caplog.set_level("INFO", logger="compression")
    build(recipe, work)
    after = finished_stamps(work)
    assert after["fp16"] != stamps["fp16"]
    for name in ("teacher", "fp32", "int8-dynamic", "int8-static", "torch-int8"):
        assert after[name] == stamps[name], f"{name} was rebuilt"
    assert "fp32: finished earlier, skipping" in caplog.text
    assert not list(work.glob(".tmp-*"))


def test_changed_recipe_rebuilds_only_changed_variant(built, tmp_path, tiny_model, tiny_data):
    _, out, _ = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    d = tiny_recipe_dict(tiny_model, tiny_data)
    d["variants"]["int8-dynamic"] = ["export", {"quantize_dynamic": {"per_channel": False}}]
    changed = Recipe.from_dict(d)
    assert not is_finished(work / "int8-dynamic", changed.variant("int8-dynamic").fingerprint(changed))
    stamps = finished_stamps(work)
    build(changed, work)
    after = finished_stamps(work)
    assert {n for n in stamps if after[n] != stamps[n]} == {"int8-dynamic"}   # the teacher and the rest were reused
    cc = json.loads((work / "int8-dynamic" / "compression_config.json").read_text())
    assert cc["steps"][1] == {"quantize_dynamic": {"preset": "auto", "per_channel": False, "operators": None}}


def test_report_has_every_row_and_recommendation_on_front(built):
    recipe, out, summary = built
    names = {r["variant"] for r in summary["rows"]}
    assert names == {"teacher"} | {v.name for v in recipe.variants}
    assert summary["recommended"] in summary["pareto"]
    md = (out / "report.md").read_text()
    for name in names:
        assert f"| {name} |" in md or f"**{name}**" in md
    assert (out / "pareto.png").stat().st_size > 10_000
    assert len((out / "report.csv").read_text().strip().splitlines()) == len(names) + 1


def test_base_model_that_is_not_a_classifier(tmp_path, tiny_data):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path / "vit")
    recipe = Recipe.from_dict(tiny_recipe_dict(tmp_path / "vit", tiny_data))
    with pytest.raises(ModelError, match="no sequence-classification head"):
        build(recipe, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        build(Recipe.from_dict(tiny_recipe_dict(tmp_path / "empty", tiny_data)), tmp_path / "out")


def test_unwritable_output_dir(tmp_path, tiny_model, tiny_data):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="not writable"):
        build(Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data)), tmp_path / "file" / "out")


def test_bad_data_stops_before_training(tmp_path, tiny_model):
    (tmp_path / "d").mkdir()
    write_tsv(tmp_path / "d" / "train.tsv", [("a b", 1), ("c d", 2)])
    write_tsv(tmp_path / "d" / "validation.tsv", [("a b", 1)])
    with pytest.raises(DataError, match="0..N-1"):
        build(Recipe.from_dict(tiny_recipe_dict(tiny_model, tmp_path / "d")), tmp_path / "out")
    assert not (tmp_path / "out" / "teacher").exists()


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "compression", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_clear_line(tmp_path, tiny_model, tiny_data):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(tiny_recipe_dict(tiny_model, tiny_data)))
    cases = [
        (["build", "--recipe", str(tmp_path / "missing.yaml")], "recipe file not found"),
        (["build", "--recipe", str(recipe), "--only", "int9"], "no variant 'int9'"),
        (["build", "--recipe", str(recipe), "--dataset", str(tmp_path / "nodata")], "dataset not found"),
        (["evaluate", "--variants-dir", str(tmp_path)], "not a build folder"),
        (["compare", str(tmp_path / "nope"), str(tmp_path / "nope2"), "--text", "x"], "not found"),
        (["compare", str(tmp_path), str(tmp_path)], "give sentences with --text or a file with --eval-data"),
        (["publish", "--variants-dir", str(tmp_path), "--namespace", "me", "--dry-run"], "no report.json"),
    ]
    for args, message in cases:
        res = _cli(*args)
        assert res.returncode == 2, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], res.stderr
        assert "Traceback" not in res.stderr


def test_every_row_has_the_out_of_domain_column(built, tiny_data):
    import numpy as np

    from compression.data import read_file
    from compression.metrics import balanced_accuracy
    from compression.artifacts import open_onnx

    _, out, summary = built
    rows = {r["variant"]: r for r in summary["rows"]}
    assert all({"ood_accuracy", "ood_balanced_accuracy", "ood_agreement"} <= set(r) for r in rows.values())
    assert rows["teacher"]["ood_agreement"] == 1.0 and rows["fp32"]["ood_samples"] == 90
    ood = read_file(tiny_data / "ood.tsv", "sentence", "label")
    pred = open_onnx(out / "fp32").logits(ood.texts).argmax(-1)
    assert rows["fp32"]["ood_balanced_accuracy"] == pytest.approx(balanced_accuracy(pred, np.array(ood.labels)))
    assert "OOD acc" in (out / "report.md").read_text()


def test_evaluate_dir_remeasures_every_row_in_one_run(built, tmp_path):
    import shutil

    from compression.build import evaluate_dir

    _, out, summary = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    for folder in work.iterdir():  # stale numbers that a re-measurement must replace
        if (folder / "metrics.json").is_file():
            m = json.loads((folder / "metrics.json").read_text())
            m.update(latency_p50_ms=999.0, accuracy=0.0)
            (folder / "metrics.json").write_text(json.dumps(m))
    again = {r["variant"]: r for r in evaluate_dir(work)["rows"]}
    before = {r["variant"]: r for r in summary["rows"]}
    assert set(again) == set(before)
    for name, row in again.items():
        assert row["latency_p50_ms"] < 999.0 and row["accuracy"] == pytest.approx(before[name]["accuracy"])
        assert row["steps"] == before[name]["steps"]  # build-time facts kept
        timing = json.loads((work / name / "metrics.json").read_text())["latency_timing"]
        assert timing.startswith("interleaved"), timing  # evaluate's latencies come from one timing pass


def test_distill_prune_vocab_chain_in_a_real_build_trains_the_shared_prefix_once(tiny_model, tiny_data, tmp_path, caplog):
    import onnx

    distill = {"distill": {"num_layers": 1, "max_steps": 6, "batch_size": 16, "train_samples": 120}}
    narrow = {"prune_structured": {"heads_fraction": 0.5, "ffn_fraction": 0.5, "max_steps": 4, "importance_batches": 2}}
    d = tiny_recipe_dict(tiny_model, tiny_data, **{
        "narrow-int8": [distill, narrow, "quantize_dynamic"],
        "narrow-vocab-int8-emb4": [distill, narrow, {"vocab_prune": {"general_words": 0, "keep_chars": False}}, "quantize_dynamic",
                                   "quantize_embeddings_4bit"],
        "pruned-int8": [narrow, "quantize_dynamic"],  # Taylor importance straight on the teacher
    })
    d["teacher"]["freeze_layers"] = 1  # trained with a frozen block, as the demo teacher is: gradients must be back after
    caplog.set_level("INFO", logger="compression")
    summary = build(Recipe.from_dict(d), tmp_path / "out")
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["pruned-int8"]["encoder_params"] < 0.55 * rows["pruned-int8"]["encoder_params_before"]
    reused = [r.getMessage() for r in caplog.records if "reusing the result of distill -> prune_structured" in r.getMessage()]
    assert len(reused) == 1  # the second chain took the trained prefix from the cache
    small = rows["narrow-vocab-int8-emb4"]
    assert small["encoder_params"] < 0.55 * small["encoder_params_before"]  # LayerNorms and output biases stay whole
    assert small["vocab_size"] < 105 and small["size_mb"] < rows["narrow-int8"]["size_mb"]
    cfg = json.loads((tmp_path / "out" / "narrow-int8" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["intermediate_size"] == 256
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "narrow-vocab-int8-emb4" / "model.onnx")).graph.node}
    assert {"GatherBlockQuantized", "MatMulInteger"} <= ops


def test_training_work_counts_a_shared_prefix_once():
    from compression.build import training_work
    from compression.recipe import Recipe

    kd = {"distill": {"num_layers": 1, "epochs": 2, "train_samples": 100}}
    recipe = Recipe.from_dict({"version": 1, "variants": {"a": [kd], "b": [kd, "quantize_dynamic"], "c": ["export"],
                                                            "d": [{"distill": {"num_layers": 1, "epochs": 1}}]}})
    # steps declare their work: whole batches of 32 (2 epochs x 100 -> 7 steps x 32 sentences) x layers trained
    assert training_work(list(recipe.variants), n_train=400) == [224.0, 0.0, 0.0, 416.0]
    # a 1-layer student costs a sixth of what the same KD on a 6-layer model costs
    prune = {"prune_structured": {"heads_fraction": 0.5, "epochs": 1, "train_samples": 100}}
    deep = Recipe.from_dict({"version": 1, "variants": {"p": [prune], "s": [kd, prune]}})
    assert training_work(list(deep.variants), n_train=400, teacher_layers=6) == [128.0 * 6, 224.0 + 128.0]
    no_recovery = Recipe.from_dict({"version": 1, "variants": {"p": [{"prune_structured": {"heads_fraction": 0.5,
                                                                                          "recovery": False}}]}})
    assert training_work(list(no_recovery.variants), n_train=400, teacher_layers=6) == [0.0]


def test_same_seed_same_machine_same_numbers(tiny_model, tiny_data, tmp_path):
    """Two builds of one recipe on one machine: identical weights, predictions and accuracies."""
    import hashlib

    kd = {"distill": {"num_layers": 1, "max_steps": 8, "batch_size": 16, "train_samples": 120}}
    d = tiny_recipe_dict(tiny_model, tiny_data, **{"int8-dynamic": ["export", "quantize_dynamic"], "student": [kd]})
    d["teacher"]["epochs"] = 1
    summaries = [build(Recipe.from_dict(d), tmp_path / name) for name in ("a", "b")]
    rows = [{r["variant"]: r for r in s["rows"]} for s in summaries]
    for name in rows[0]:
        for key in ("accuracy", "ood_accuracy", "agreement", "delta_accuracy", "delta_accuracy_ci95", "flips_lost"):
            assert rows[0][name][key] == rows[1][name][key], (name, key)
        assert (tmp_path / "a" / name / "predictions.json").read_text() == (tmp_path / "b" / name / "predictions.json").read_text()
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a" / "teacher" / "model.safetensors") == digest(tmp_path / "b" / "teacher" / "model.safetensors")
    assert digest(tmp_path / "a" / "student" / "model.onnx") == digest(tmp_path / "b" / "student" / "model.onnx")
