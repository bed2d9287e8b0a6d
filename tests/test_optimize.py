"""Bring your own model: optimize any fine-tuned classifier, compare, mobile .ort."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from compression.errors import ModelError, RecipeError
from compression.optimize import compare, optimize
from compression.config import EvalConfig
from compression.loader import load_runner
from compression.modeling import accepted_inputs
from compression.artifacts import open_onnx
from conftest import REPO, make_tiny_model, synthetic, write_tsv

FAST = EvalConfig(latency_runs=5, warmup=1, latency_sentences=3)
TEXTS = [t for t, _ in synthetic(30, 33)] + ["good", "a very long review " * 30]


def tiny_arch(folder, arch):
    """A random tiny classifier of ``arch`` sharing the tiny WordPiece tokenizer (ids are all the model sees)."""
    import transformers as tf

    make_tiny_model(folder)
    if arch == "bert":
        return folder
    tok_vocab = len((folder / "vocab.txt").read_text().split())
    common = dict(num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}, pad_token_id=0)
    configs = {
        "distilbert": (tf.DistilBertConfig(vocab_size=tok_vocab, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                                           max_position_embeddings=64, **common), tf.DistilBertForSequenceClassification),
        "roberta": (tf.RobertaConfig(vocab_size=tok_vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=66, **common), tf.RobertaForSequenceClassification),
        "deberta-v2": (tf.DebertaV2Config(vocab_size=tok_vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=128, max_position_embeddings=64, type_vocab_size=0, **common),
                       tf.DebertaV2ForSequenceClassification),
        "gpt2": (tf.GPT2Config(vocab_size=tok_vocab, n_embd=64, n_layer=2, n_head=2, n_positions=64, **common),
                 tf.GPT2ForSequenceClassification),
    }
    config, cls = configs[arch]
    for f in ("config.json", "model.safetensors"):
        (folder / f).unlink()
    # like their real tokenizers, these models get no token_type_ids (GPT-2 would add them as embeddings)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok_cfg["model_input_names"] = ["input_ids", "attention_mask"]
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    torch.manual_seed(0)
    cls(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta", "deberta-v2", "gpt2"])
def test_optimize_every_architecture_end_to_end(arch, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tiny_arch(tmp_path / "model", arch)
    summary = optimize(str(model_dir), tmp_path / "out", ["fp32", "int8-dynamic"], evaluation=FAST)
    assert {r["variant"] for r in summary["rows"]} == {"teacher", "fp32", "int8-dynamic"}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        enc = tok(TEXTS[:8], padding=True, truncation=True, max_length=60, return_tensors="pt")
        ref = model(**accepted_inputs(model, enc)).logits.numpy()
    got = open_onnx(tmp_path / "out" / "fp32", max_len=60).logits(TEXTS[:8])
    np.testing.assert_allclose(got, ref, atol=1e-4)  # padding handled (GPT-2 reads the last non-pad token)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "int8-dynamic" / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops
    m = json.loads((tmp_path / "out" / "int8-dynamic" / "metrics.json").read_text())
    assert m["eval_data"].endswith("probe.jsonl")  # quality = agreement with the original, on a named file
    probe = [json.loads(line)["label"] for line in (tmp_path / "out" / "probe.jsonl").read_text().splitlines()]
    runner = open_onnx(tmp_path / "out" / "int8-dynamic", max_len=60)
    from compression.optimize import PROBE

    alone = [int(runner.forward(runner.encode([t])).argmax()) for t in PROBE]  # each probe sentence on its own
    assert m["accuracy"] == pytest.approx(np.mean(np.array(alone) == np.array(probe)))
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["fp32"]["accuracy"] == 1.0  # the exported original answers every probe as the original did
    assert summary["skipped"] == {}


def test_structured_pruning_says_it_does_not_apply_to_gpt2(tmp_path):
    model_dir = tiny_arch(tmp_path / "gpt2", "gpt2")
    data = write_tsv(tmp_path / "cal.tsv", synthetic(40, 3))
    from compression.build import build
    from compression.recipe import Recipe
    from conftest import tiny_recipe_dict

    d = tiny_recipe_dict(model_dir, tmp_path, x=[{"prune_structured": {"heads_fraction": 0.5}}])
    d["dataset"] = {"path": str(data)}
    d["teacher"] = {"skip": True}
    with pytest.raises(RecipeError, match="structured pruning supports bert, .*not .gpt2."):
        build(Recipe.from_dict(d), tmp_path / "out")


def test_mobile_ort_matches_onnx(tmp_path, tiny_model):
    import onnxruntime as ort

    optimize(str(tiny_model), tmp_path / "out", ["int8-dynamic"], mobile=True, evaluation=FAST)
    folder = tmp_path / "out" / "int8-dynamic"
    assert (folder / "model.ort").is_file() and (folder / "tokenizer.json").is_file()
    assert (folder / "required_operators.config").is_file()
    runner = open_onnx(folder, max_len=32)
    enc = runner.encode(TEXTS[:6])
    sess = ort.InferenceSession(str(folder / "model.ort"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, enc)[0], runner.forward(enc), atol=1e-5)


def test_static_calibration_and_pruning_need_data(tmp_path, tiny_model):
    with pytest.raises(RecipeError, match="needs training/calibration data.*give calibration_data"):
        optimize(str(tiny_model), tmp_path / "out", ["int8-static"])
    data = write_tsv(tmp_path / "cal.tsv", synthetic(60, 4))
    summary = optimize(str(tiny_model), tmp_path / "out2", ["int8-static"], pruning_amount=0.3, threshold=0.01,
                       calibration_data=str(data), eval_data=str(data), evaluation=FAST)
    rows = {r["variant"]: r for r in summary["rows"]}
    assert set(rows) == {"teacher", "int8-static", "pruned", "thresholded"}
    assert abs(rows["pruned"]["encoder_sparsity"] - 0.3) < 1e-3
    assert json.loads((tmp_path / "out2" / "pruned" / "metrics.json").read_text())["eval_data"] == str(data.resolve())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"threshold": -1.0}, RecipeError, "threshold must be >= 0"),
    ({"pruning_amount": 1.0}, RecipeError, "pruning_amount must be in [0, 1)"),
    ({"variants": ["fp64"]}, RecipeError, "unknown variant 'fp64'"),
    ({"variants": ["int8-static"], "calibration_data": "/no/such/cal.tsv"}, RecipeError, "calibration_data: file not found"),
    ({"eval_data": "/no/such/dev.tsv"}, RecipeError, "eval_data: file not found: /no/such/dev.tsv"),
])
def test_bad_options_fail_before_work(tmp_path, tiny_model, kwargs, error, message):
    with pytest.raises(error) as exc:
        optimize(str(tiny_model), tmp_path / "out", **kwargs)
    assert message in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_not_a_model_no_head_and_remote_code(tmp_path):
    from transformers import BertConfig, BertModel

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        optimize(str(tmp_path / "empty"), tmp_path / "o1")
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "base")
    with pytest.raises(ModelError, match="no sequence-classification head"):
        optimize(str(tmp_path / "base"), tmp_path / "o2")
    custom = tmp_path / "custom"
    custom.mkdir()
    marker = tmp_path / "EXECUTED"
    (custom / "config.json").write_text(json.dumps({
        "model_type": "totally-custom", "architectures": ["CustomForSequenceClassification"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}))
    (custom / "configuration_custom.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    with pytest.raises(ModelError, match="trust_remote_code"):
        optimize(str(custom), tmp_path / "o3")
    assert not marker.exists()


def test_compare_reports_flips_and_cli(tmp_path, built):
    _, out, _ = built
    result = compare(str(out / "fp32"), [str(out / "int8-dynamic"), str(out / "fp16")], TEXTS)
    rows = {r["model"]: r for r in result["rows"]}
    ref = open_onnx(out / "fp32")
    ref_logits = np.concatenate([ref.forward(ref.encode([t])) for t in TEXTS])
    for name in ("int8-dynamic", "fp16"):  # every number of a variant's row, recomputed one sentence at a time
        r = open_onnx(out / name)
        logits = np.concatenate([r.forward(r.encode([t])) for t in TEXTS])
        row = rows[str(out / name)]
        same = logits.argmax(-1) == ref_logits.argmax(-1)
        assert row["agreement"] == pytest.approx(np.mean(same))
        assert row["max_logit_diff"] == pytest.approx(float(np.abs(logits - ref_logits).max()), abs=1e-5)
        assert row["flipped"] == [t for t, ok in zip(TEXTS, same) if not ok]
    q = rows[str(out / "int8-dynamic")]
    assert q["size_mb"] * 3 < rows[str(out / "fp32")]["size_mb"] and q["max_logit_diff"] > 0
    data = write_tsv(tmp_path / "s.tsv", synthetic(20, 8))
    res = subprocess.run([sys.executable, "-m", "compression", "compare", str(out / "fp32"), str(out / "int8-dynamic"),
                          "--eval-data", str(data), "--json", str(tmp_path / "c.json")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| model | size MB" in res.stdout and json.loads((tmp_path / "c.json").read_text())["sentences"] == 20
    loaded = load_runner(out / "int8-dynamic")
    assert loaded.logits(["good"]).shape == (1, 2)


def test_bnb_variant_skipped_with_one_line_reason(tmp_path, tiny_model, caplog):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes and a GPU are present: the variant would really be built")
    caplog.set_level("WARNING", logger="compression")
    summary = optimize(str(tiny_model), tmp_path / "out", ["fp32", "bnb-int8"], evaluation=FAST)
    assert {r["variant"] for r in summary["rows"]} == {"teacher", "fp32"}
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bnb-int8 skipped:")]
    assert len(skipped) == 1 and "\n" not in skipped[0] and "bnb-int8" in summary["skipped"]
    assert not (tmp_path / "out" / "bnb-int8").exists()


def test_multi_label_semantics_survive_export_eval_and_app(tmp_path):
    """A toxic-comment-style model: 3 independent sigmoid labels, multi-hot gold labels."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compression import serving
    from compression.metrics import predictions

    folder = make_tiny_model(tmp_path / "model")
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=3, problem_type="multi_label_classification", ignore_mismatched_sizes=True,
        id2label={0: "toxic", 1: "insult", 2: "threat"}, label2id={"toxic": 0, "insult": 1, "threat": 2})
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([2.0, -2.0, 0.0]))  # toxic on, insult off, threat undecided
    model.save_pretrained(folder)
    texts = [t for t, _ in synthetic(40, 12)]
    gold = [[1, 0, i % 2] for i in range(40)]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in zip(texts, gold)))
    summary = optimize(str(folder), tmp_path / "out", ["fp32", "int8-dynamic"], eval_data=str(data), evaluation=FAST)
    runner = open_onnx(tmp_path / "out" / "fp32")
    pred = predictions(runner.logits(texts), multi_label=True)
    assert pred.shape == (40, 3) and set(np.unique(pred)) <= {0, 1}
    expected_acc = float(np.mean((pred == np.array(gold)).all(-1)))
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["fp32"]["accuracy"] == pytest.approx(expected_acc)
    assert rows["fp32"]["agreement"] == 1.0
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        ref = model.eval()(**tok(texts[:5], padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(runner.logits(texts[:5]), ref, atol=1e-4)
    family = serving.load_family(tmp_path / "out")
    out, _ = serving.predict(family, texts[0])
    fp32 = next(r for r in out if r["variant"] == "fp32")
    probs = 1 / (1 + np.exp(-ref[0]))
    assert fp32["label"] == ", ".join(n for n, p in zip(["toxic", "insult", "threat"], probs) if p > 0.5)
    assert "toxic" in fp32["label"] and "insult" not in fp32["label"]


def test_optimize_output_is_a_real_recipe_that_evaluate_remeasures(tmp_path, tiny_model):
    from compression.build import evaluate_dir
    from compression.recipe import load_recipe

    data = write_tsv(tmp_path / "dev.tsv", synthetic(50, 21))
    optimize(str(tiny_model), tmp_path / "out", ["fp32", "int8-dynamic"], eval_data=str(data), evaluation=FAST)
    recipe = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert recipe.dataset.eval_path == str(data.resolve()) and recipe.teacher.skip
    cc = json.loads((tmp_path / "out" / "fp32" / "compression_config.json").read_text())
    assert cc["recipe"] == recipe.to_dict()  # the recipe beside the artifact reloads identically
    before = json.loads((tmp_path / "out" / "int8-dynamic" / "metrics.json").read_text())
    summary = evaluate_dir(tmp_path / "out")
    after = {r["variant"]: r for r in summary["rows"]}["int8-dynamic"]
    assert after["eval_samples"] == before["eval_samples"] == 50
    assert after["accuracy"] == pytest.approx(before["accuracy"])  # same sentences, same model, same answer


def test_gpt2_steps_that_do_not_apply_are_skipped_with_a_reason(tmp_path):
    model_dir = tiny_arch(tmp_path / "gpt2", "gpt2")
    data = write_tsv(tmp_path / "cal.tsv", synthetic(40, 3))
    summary = optimize(str(model_dir), tmp_path / "out", ["fp32", "pruned", "distilled-half"], calibration_data=str(data),
                       evaluation=FAST)
    assert {r["variant"] for r in summary["rows"]} == {"teacher", "fp32"}   # the rest were still built
    assert set(summary["skipped"]) == {"pruned", "distilled-half"}
    assert all("gpt2" in reason and "\n" not in reason for reason in summary["skipped"].values())
    res = subprocess.run([sys.executable, "-m", "compression", "optimize", "--model", str(model_dir), "--variants-dir",
                          str(tmp_path / "cli"), "--only", "fp32", "distilled-half"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert "skipped distilled-half: step 'distill': layer dropping supports bert, " in res.stdout and "; not 'gpt2'" in res.stdout


def test_compare_handles_a_gpt2_without_pad_token(tmp_path):
    model_dir = tiny_arch(tmp_path / "gpt2", "gpt2")
    optimize(str(model_dir), tmp_path / "out", ["fp16", "int8-dynamic"], evaluation=FAST)
    result = compare(str(model_dir), [str(tmp_path / "out" / "fp16"), str(tmp_path / "out" / "int8-dynamic")], TEXTS[:10])
    rows = {r["model"]: r for r in result["rows"]}
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    original = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    with torch.no_grad():  # the GPT-2 original, one sentence at a time: no pad token needed at all
        want = np.concatenate([original(**accepted_inputs(original, tok([t], return_tensors="pt"))).logits.numpy()
                               for t in TEXTS[:10]])
    fp16 = open_onnx(tmp_path / "out" / "fp16")
    got = np.concatenate([fp16.forward(fp16.encode([t])) for t in TEXTS[:10]])
    row = rows[str(tmp_path / "out" / "fp16")]
    assert row["agreement"] == pytest.approx(np.mean(got.argmax(-1) == want.argmax(-1)))
    assert row["max_logit_diff"] == pytest.approx(float(np.abs(got - want).max()), abs=2e-3)


def test_classifier_without_label_names_is_refused_before_work(tmp_path, tiny_model):
    import shutil

    folder = tmp_path / "nolabels"
    shutil.copytree(tiny_model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("id2label"), cfg.pop("label2id")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="no label names"):
        optimize(str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_usable_tokenizer_is_one_line_before_work(tmp_path, tiny_model):
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model, folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    res = subprocess.run([sys.executable, "-m", "compression", "optimize", "--model", str(folder), "--variants-dir",
                          str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "no usable tokenizer" in errors[0], res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
