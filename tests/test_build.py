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
from conftest import REPO, tiny_recipe_dict, write_tsv

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
    stamps = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in work.iterdir() if (p / "metrics.json").exists()}
    (work / "fp16" / "metrics.json").write_text("{ truncated")   # as if killed mid-write
    (work / ".tmp-int8-dynamic-999").mkdir()                     # leftover of a killed build
    caplog.set_level("INFO", logger="compression")
    build(recipe, work)
    after = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in work.iterdir() if (p / "metrics.json").exists()}
    assert after["fp16"] != stamps["fp16"]
    for name in ("teacher", "fp32", "int8-dynamic", "int8-static", "torch-int8"):
        assert after[name] == stamps[name], f"{name} was rebuilt"
    assert "fp32: finished earlier, skipping" in caplog.text
    assert not list(work.glob(".tmp-*"))


def test_changed_recipe_rebuilds_only_changed_variant(built, tmp_path, tiny_model, tiny_data):
    _, out, _ = built
    d = tiny_recipe_dict(tiny_model, tiny_data)
    d["variants"]["int8-dynamic"] = ["export", {"quantize_dynamic": {"per_channel": False}}]
    changed = Recipe.from_dict(d)
    assert not is_finished(out / "int8-dynamic", changed.variant("int8-dynamic").fingerprint(changed))
    assert is_finished(out / "fp32", changed.variant("fp32").fingerprint(changed))


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
