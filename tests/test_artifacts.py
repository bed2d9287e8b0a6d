"""The variant folder has one owner, torch-free; its integrity check drives resume, evaluate and compare."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from compression import artifacts
from compression.build import build, evaluate_dir
from compression.errors import ArtifactError
from compression.recipe import Recipe
from conftest import REPO, finished_stamps, tiny_recipe_dict

FILE_NAMES = ("model.onnx", "model.safetensors", "pytorch_int8.pt", "compression_config.json", "metrics.json",
              "tokenizer.json", "predictions.json", "report.json", "progress.json", "model.ort")


def test_artifacts_and_the_serving_side_import_without_torch():
    code = ("import sys\nimport compression.artifacts, compression.serving, compression.progress, compression.report\n"
            "bad = sorted(m for m in ('torch', 'transformers', 'optimum', 'accelerate') if m in sys.modules)\n"
            "print(','.join(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_no_module_but_artifacts_names_a_variant_file():
    """A new developer finds each file name of the folder contract in exactly one place."""
    offenders = []
    for path in sorted((REPO / "compression").rglob("*.py")):
        if path.name in ("artifacts.py", "hubserver.py"):
            continue
        text = path.read_text()
        for name in FILE_NAMES:
            if re.search(rf"[\"']{re.escape(name)}[\"']", text):
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []


def test_one_architecture_table_answers_every_check():
    from transformers import BertConfig, DistilBertConfig, ElectraConfig, GPT2Config, RobertaConfig

    from compression.modeling import ARCHITECTURES, num_layers, usable_length
    from compression.registry import not_applicable
    from compression.recipe import Recipe

    r = Recipe.from_dict({"version": 1, "variants": {
        "d": [{"distill": {"num_layers": 1}}], "p": [{"prune_structured": {"heads_fraction": 0.5}}],
        "v": [{"vocab_prune": {"general_words": 0}}], "f": ["export", "fuse", "quantize_dynamic"]}})
    cases = {"bert": BertConfig(), "electra": ElectraConfig(), "roberta": RobertaConfig(), "distilbert": DistilBertConfig(),
             "gpt2": GPT2Config()}
    for model_type, config in cases.items():
        entry = ARCHITECTURES.get(model_type)
        for variant, feature in zip(r.variants, ("encoder", "heads_ffn", "wordpiece", "heads_ffn")):
            applies = not_applicable(variant, config) is None
            assert applies == bool(entry and getattr(entry, feature)), (model_type, variant.name)
    assert num_layers(GPT2Config(n_layer=3)) == 3 and num_layers(DistilBertConfig(n_layers=4)) == 4
    assert usable_length(RobertaConfig(max_position_embeddings=66).to_dict(), 128) == 64  # padding offset
    assert usable_length({"max_position_embeddings": 512, "model_type": "bert"}, 128) == 128


def test_resume_rebuilds_a_truncated_model_and_keeps_the_rest(built, tmp_path, caplog):
    recipe, out, _ = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    assert all(artifacts.verify(f) is None for f in artifacts.list_variants(work))
    data = (work / "int8-dynamic" / "model.onnx").read_bytes()
    (work / "int8-dynamic" / "model.onnx").write_bytes(data[:-1000])
    (work / "fp16" / "tokenizer.json").write_text("{}")
    assert "model.onnx changed since it was built" in artifacts.verify(work / "int8-dynamic")
    fp = recipe.variant("int8-dynamic").fingerprint(recipe)
    assert not artifacts.is_finished(work / "int8-dynamic", fp)   # the file exists, but it is not what was built
    stamps = finished_stamps(work)
    caplog.set_level("WARNING", logger="compression")
    build(recipe, work)
    after = finished_stamps(work)
    assert {n for n in stamps if after[n] != stamps[n]} == {"int8-dynamic", "fp16"}
    assert (work / "int8-dynamic" / "model.onnx").read_bytes() == data   # rebuilt identically
    assert "int8-dynamic: rebuilding" in caplog.text
    assert all(artifacts.verify(f) is None for f in artifacts.list_variants(work))


def test_evaluate_and_compare_stop_on_a_corrupt_folder_with_one_line(built, tmp_path):
    _, out, _ = built
    work = tmp_path / "v"
    shutil.copytree(out, work)
    (work / "fp16" / "model.onnx").write_bytes(b"\x08\x01garbage")
    before = (work / "fp32" / "metrics.json").read_text()
    with pytest.raises(ArtifactError, match="fp16: model.onnx changed since it was built"):
        evaluate_dir(work)
    assert (work / "fp32" / "metrics.json").read_text() == before   # nothing rewritten
    for args in (["evaluate", "--variants-dir", str(work)], ["compare", str(work / "fp32"), str(work / "fp16"), "--text", "good"]):
        res = subprocess.run([sys.executable, "-m", "compression", *args], capture_output=True, text=True, cwd=REPO, timeout=300)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 2 and len(errors) == 1 and str(work / "fp16") in errors[0], res.stderr
        assert "Traceback" not in res.stderr


def test_finish_writes_a_manifest_and_moves_atomically(tmp_path):
    tmp = artifacts.temp_folder(tmp_path, "x")
    (tmp / "model.onnx").write_bytes(b"model")
    (tmp / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="metrics lack"):
        artifacts.finish(tmp, tmp_path / "x", {"variant": "x"})
    assert not (tmp_path / "x").exists()                          # an incomplete row never appears
    m = artifacts.finish(tmp, tmp_path / "x", {"variant": "x", "accuracy": 1.0, "latency_p50_ms": 1.0, "size_mb": 0.0,
                                                "fingerprint": "f"}, {"eval": [1]})
    assert set(m["manifest"]) == {"model.onnx", "config.json", "predictions.json"}
    assert not tmp.exists() and artifacts.verify(tmp_path / "x") is None
    assert artifacts.read_predictions(tmp_path / "x") == {"eval": [1]}


@pytest.mark.parametrize("dataset, evaluation, expect", [
    ({"path": "glue/sst2"}, {}, {"name": "glue/sst2", "hub_id": "nyu-mll/glue", "hub_config": "sst2", "split": "validation",
                                  "ood_name": None}),
    ({"path": "../shared/data/sst2", "name": "GLUE SST-2", "hub_id": "nyu-mll/glue", "hub_config": "sst2"},
     {"ood_path": "x/airline_tweets.tsv", "ood_name": "Twitter US Airline Sentiment"},
     {"name": "GLUE SST-2", "hub_id": "nyu-mll/glue", "ood_name": "Twitter US Airline Sentiment"}),
    ({"path": "/data/my_reviews.csv"}, {}, {"name": "my_reviews.csv", "hub_id": None, "split": "validation"}),
    ({"path": "/data/train.csv", "eval_path": "/data/holdout.csv"}, {"ood_path": "/d/other.tsv"},
     {"name": "holdout.csv", "hub_id": None, "split": "test", "ood_name": "other.tsv"}),
])
def test_data_description_comes_from_the_recipe_alone(dataset, evaluation, expect):
    got = artifacts.data_description({"dataset": dataset, "evaluation": evaluation})
    assert {k: got[k] for k in expect} == expect
    assert "SST-2" not in json.dumps(got) or "SST-2" in json.dumps(dataset)


def test_display_names_do_not_change_fingerprints(tiny_model, tiny_data):
    a = Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data))
    d = tiny_recipe_dict(tiny_model, tiny_data)
    d["dataset"]["name"] = "another name"
    b = Recipe.from_dict(d)
    assert a.variant("fp32").fingerprint(a) == b.variant("fp32").fingerprint(b)
    d["dataset"]["max_length"] = 16
    c = Recipe.from_dict(d)
    assert a.variant("fp32").fingerprint(a) != c.variant("fp32").fingerprint(c)
