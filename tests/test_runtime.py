"""ONNX export parity: the exported graph must compute what PyTorch computes."""
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compression.loader import load_runner
from compression.artifacts import open_onnx
from compression.runtime import OnnxRunner, TorchRunner
from compression.errors import OnnxError
from compression.steps.export import load_onnx
from conftest import synthetic

TEXTS = [t for t, _ in synthetic(24, 9)] + ["", "good " * 40, "unknownword ??? !!"]
FP32_ATOL = 1e-4  # float32 export: only op-order rounding differs
FP16_ATOL = 2e-2  # fp16 weights/activations: ~3 decimal digits


def _torch_logits(folder, texts):
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    return TorchRunner(model, AutoTokenizer.from_pretrained(folder), max_length=32).logits(texts, 8)


def test_fp32_onnx_matches_pytorch(built):
    _, out, _ = built
    ref = _torch_logits(out / "teacher", TEXTS)
    got = open_onnx(out / "fp32", max_len=32).logits(TEXTS, 8)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=FP32_ATOL)


def test_fp16_onnx_matches_pytorch(built):
    _, out, _ = built
    ref = _torch_logits(out / "teacher", TEXTS)
    got = open_onnx(out / "fp16", max_len=32).logits(TEXTS, 8)
    np.testing.assert_allclose(got, ref, atol=FP16_ATOL)
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


def test_variant_folder_loads_with_optimum(built):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    _, out, _ = built
    for name in ("fp32", "int8-dynamic", "int8-static", "fp16"):
        model = ORTModelForSequenceClassification.from_pretrained(out / name)
        tok = AutoTokenizer.from_pretrained(out / name)
        enc = tok(TEXTS[:6], padding=True, return_tensors="np")
        ours = load_runner(out / name, max_length=32).logits(TEXTS[:6])
        np.testing.assert_allclose(model(**enc).logits, ours, atol=1e-5)
        assert model.config.id2label == {0: "negative", 1: "positive"}


def test_torch_int8_reference_row_reloads(built):
    _, out, _ = built
    runner = load_runner(out / "torch-int8", max_length=32)
    ref = _torch_logits(out / "teacher", TEXTS)
    got = runner.logits(TEXTS, 8)
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    assert not np.allclose(got, ref, atol=1e-7)  # it really is quantized


def test_corrupt_onnx_gives_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(OnnxError, match="not a valid ONNX model"):
        load_onnx(bad)
    with pytest.raises(OnnxError, match="ONNX file not found"):
        load_onnx(tmp_path / "missing.onnx")


def test_onnx_runner_tokenizes_exactly_like_transformers(tmp_path):
    """The app and the Space tokenize with `tokenizers` alone; ids must equal what the build measured with."""
    import shutil

    from transformers import AutoTokenizer

    from compression.modeling import default_base_model

    folder = tmp_path / "minilm-tok"
    folder.mkdir()
    tok = AutoTokenizer.from_pretrained(default_base_model())
    tok.save_pretrained(folder)
    shutil.copy(Path(default_base_model()) / "config.json", folder / "config.json")
    texts = ["not bad at all", "@united 2 HOURS on the tarmac!!! http://t.co/xyz 😡", "naïve café — déjà vu",
             "a very long review " * 40, "", "i did n't expect to hate it this much ."]

    class Probe(OnnxRunner):  # the tokenization half of OnnxRunner, without an ONNX file
        def __init__(self):
            from tokenizers import Tokenizer

            self.input_names = ["input_ids", "attention_mask", "token_type_ids"]
            self.config, self.max_length, self.pad_token = {"pad_token_id": 0}, 64, "[PAD]"
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.no_padding()
            self.tokenizer.enable_truncation(self.max_length)
            self.pad_id = self._pad_id()

    got = Probe().encode(texts)
    want = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[key], want[key])
