"""4-bit steps: the right ops land in the graph, logits stay close to the parent, loadable everywhere."""
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compression.artifacts import open_onnx
from compression.steps.lowbit import pack_gather_uint8, quantize_4bit, word_embedding_gather
from conftest import synthetic

TEXTS = [t for t, _ in synthetic(40, 17)]


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_embeddings_4bit_after_int8_keeps_int8_matmuls_and_logits(built, tmp_path):
    _, out, _ = built
    parent, child = open_onnx(out / "int8-dynamic"), open_onnx(out / "int8-emb4")
    ops = _ops(child.model_file)
    assert ops.count("GatherBlockQuantized") == 1                       # only the word table
    assert ops.count("MatMulInteger") == _ops(parent.model_file).count("MatMulInteger") > 0  # MatMuls stay int8
    model = onnx.load(str(child.model_file))
    node = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    table = next(t for t in model.graph.initializer if t.name == node.input[0])
    assert table.data_type == onnx.TensorProto.UINT8 and {a.name: a.i for a in node.attribute}["bits"] == 4  # ORT's fast layout
    with pytest.raises(ValueError, match="already 4-bit"):
        word_embedding_gather(model)                                      # no float/int8 word Gather left
    a, b = parent.logits(TEXTS), child.logits(TEXTS)
    assert np.abs(a - b).max() < 0.02                                     # stated tolerance for the tiny model
    assert np.mean(a.argmax(-1) == b.argmax(-1)) >= 0.95


def test_embedding_blocks_bound_the_error_of_every_row(built, tmp_path):
    """Symmetric int4 blocks (scale = block max / 8 over [-8, 7]): each value is off by at most one
    step, the block's own scale; a misaligned block or wrong axis would be off by far more."""
    _, out, _ = built
    fp32 = onnx.load(str(out / "fp32" / "model.onnx"))
    table = next(numpy_helper.to_array(t) for t in fp32.graph.initializer if t.name == word_embedding_gather(fp32).input[0])
    path = tmp_path / "m.onnx"
    shutil.copy(out / "fp32" / "model.onnx", path)
    quantize_4bit(path, block_size=32, symmetric=True, matmuls=False, embeddings=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.arange(table.shape[0], dtype=np.int64)[None, :64]
    probe = onnx.load(str(path))
    node = next(n for n in probe.graph.node if n.op_type == "GatherBlockQuantized")
    cast = next(n for n in probe.graph.node if n.input == [node.output[0]])  # float16 scales: the rows as the graph reads them
    probe.graph.output.append(onnx.helper.make_tensor_value_info(cast.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    got = sess.run([cast.output[0]], {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})[0][0]
    want = table[:64]
    step = np.abs(want.reshape(64, -1, 32)).max(-1, keepdims=True) / 8
    err = np.abs(got - want).reshape(64, -1, 32)
    assert np.all(err <= step * (1 + 2e-3) + 1e-6)  # one step, plus float16's rounding of the scale and the product
    assert err.mean() < 0.5 * step.mean()  # rounding, not clipping, dominates


@pytest.mark.parametrize("symmetric", [True, False])
def test_uint8_packed_table_reads_the_same_rows_as_ort_int4_layout(tmp_path, symmetric):
    """ORT's quantizer writes the 4-bit table int4/uint4-typed; the step re-stores it as uint8 bytes
    (bits=4), which ORT reads several times faster. Every row must come back identical: a swapped
    nibble order, a missing +8 for symmetric int4, or zero points packed wrongly would change them.
    96 values a row in blocks of 32 gives an odd count of zero points per row (padded)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    table = np.random.default_rng(0).standard_normal((40, 96)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gather", ["W", "input_ids"], ["y"], name="g")], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(table, "W")])
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=symmetric, op_types_to_quantize=("Gather",),
                                          quant_axes=(("Gather", 1),))
    quantizer = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), algo_config=config)
    quantizer.process()
    int4 = quantizer.model.model
    packed = onnx.ModelProto.FromString(int4.SerializeToString())
    assert pack_gather_uint8(packed) == 1 and pack_gather_uint8(packed) == 0  # a second pass finds nothing to do
    types = {t.name: t.data_type for t in packed.graph.initializer}
    node = packed.graph.node[0]
    assert types[node.input[0]] == TensorProto.UINT8 and ({a.name: a.i for a in node.attribute}["bits"] == 4)
    assert (len(node.input) > 3) != symmetric and all(types[i] == TensorProto.UINT8 for i in node.input[3:])
    ids = {"input_ids": np.arange(40, dtype=np.int64)[None]}
    want = ort.InferenceSession(int4.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    got = ort.InferenceSession(packed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    np.testing.assert_array_equal(got, want)
    assert np.abs(got[0] - table).max() < np.abs(table).max() / 7  # and they are the table, within 4-bit steps


def test_packed_table_counts_as_the_int4_table_it_is(built, tmp_path):
    """params and sparsity read the uint8-packed table as its int4 values, not as half as many bytes."""
    from compression.metrics import weight_stats

    _, out, _ = built
    stats = {}
    for pack in (True, False):
        folder = tmp_path / f"pack-{pack}"
        shutil.copytree(out / "int8-dynamic", folder)
        quantize_4bit(folder / "model.onnx", 32, True, matmuls=False, embeddings=True, pack=pack)
        stats[pack] = weight_stats(open_onnx(folder))
    assert stats[True] == stats[False]
    assert stats[True][0] > weight_stats(open_onnx(out / "int8-dynamic"))[0] * 0.95  # the table still counts whole


def test_float16_scales_halve_the_scales_and_keep_the_logits(built, tmp_path):
    """The default stores the embedding blocks' scales as float16 with a Cast back to float32 after the
    Gather: the scales take half the bytes, and the graph computes what the float32-scales graph does,
    within float16's rounding of the scales."""
    import onnxruntime as ort

    _, out, _ = built
    paths = {}
    for scales in ("float16", "float32"):
        paths[scales] = tmp_path / f"{scales}.onnx"
        shutil.copy(out / "int8-dynamic" / "model.onnx", paths[scales])
        quantize_4bit(paths[scales], block_size=32, symmetric=True, matmuls=False, embeddings=True, scales=scales)
    half, full = onnx.load(str(paths["float16"])), onnx.load(str(paths["float32"]))
    node = next(n for n in half.graph.node if n.op_type == "GatherBlockQuantized")
    dtype = {t.name: t.data_type for t in half.graph.initializer}
    assert dtype[node.input[2]] == onnx.TensorProto.FLOAT16
    assert [n.op_type for n in half.graph.node if node.output[0] in n.input] == ["Cast"]
    nbytes = {scales: numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == node.input[2])).nbytes
              for scales, m in (("float16", half), ("float32", full))}
    assert 2 * nbytes["float16"] == nbytes["float32"] > 0
    assert paths["float16"].stat().st_size < paths["float32"].stat().st_size  # the Cast costs less than it saves
    enc = open_onnx(out / "int8-dynamic").encode(TEXTS)
    got = {}
    for scales, path in paths.items():
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got[scales] = sess.run(None, {k: v for k, v in enc.items() if k in {i.name for i in sess.get_inputs()}})[0]
    assert np.abs(got["float16"] - got["float32"]).max() < 0.01
    assert np.mean(got["float16"].argmax(-1) == got["float32"].argmax(-1)) >= 0.95


def test_the_int4_upgrade_notice_is_not_a_build_warning(built, tmp_path, caplog):
    """The exported graph's IR/opset predate int4, so ORT's quantizer upgrades them and warns each time; the
    build knows (ORT opens the result), so only the step's own line shows."""
    import logging

    _, out, _ = built
    folder = tmp_path / "w4"
    shutil.copytree(out / "fp32", folder)
    model = onnx.load(str(folder / "model.onnx"))
    assert model.ir_version < 10 or min(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 21
    with caplog.at_level(logging.INFO):
        quantize_4bit(folder / "model.onnx", 32, True, matmuls=True, embeddings=True)
    messages = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith(("The IR version", "The opset of the input model")) for m in messages), messages
    assert any(m.startswith("4-bit:") for m in messages)
    assert onnx.load(str(folder / "model.onnx")).ir_version >= 10


def test_weights_4bit_on_float_graph_and_refused_after_int8(built, tmp_path):
    _, out, _ = built
    path = tmp_path / "w4.onnx"
    shutil.copy(out / "fp32" / "model.onnx", path)
    counts = quantize_4bit(path, block_size=32, symmetric=True, matmuls=True, embeddings=True)
    assert counts["MatMulNBits"] > 0 and counts["GatherBlockQuantized"] == 1
    assert path.stat().st_size < 0.5 * (out / "fp32" / "model.onnx").stat().st_size
    import onnxruntime as ort  # the 4-bit graph runs, and computes what the float graph computes, within 4-bit error

    fp32 = open_onnx(out / "fp32")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    enc = fp32.encode(TEXTS)
    got = sess.run(None, {k: v for k, v in enc.items() if k in {i.name for i in sess.get_inputs()}})[0]
    want = fp32.forward(enc)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.1
    assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.95
    int8 = tmp_path / "int8.onnx"
    shutil.copy(out / "int8-dynamic" / "model.onnx", int8)
    with pytest.raises(ValueError, match="put quantize_weights_4bit on a float graph"):
        quantize_4bit(int8, block_size=32, symmetric=True, matmuls=True, embeddings=False)


def test_4bit_variant_loads_through_optimum_and_is_smaller(built):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    _, out, summary = built
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["int8-emb4"]["size_mb"] < rows["int8-dynamic"]["size_mb"]
    assert "4-bit" in rows["int8-emb4"]["tags"]
    model = ORTModelForSequenceClassification.from_pretrained(out / "int8-emb4")
    tok = AutoTokenizer.from_pretrained(out / "int8-emb4")
    logits = model(**tok(TEXTS[:4], padding=True, return_tensors="pt")).logits.detach().numpy()
    np.testing.assert_allclose(logits, open_onnx(out / "int8-emb4").logits(TEXTS[:4]), atol=1e-5)


@pytest.mark.parametrize("options, message", [({"block_size": 48}, "power of two"), ({"accuracy_level": 7}, "0..4"),
                                              ({"scales": "int8"}, "float16 or float32")])
def test_bad_4bit_options_fail_in_the_recipe(tiny_model, tiny_data, options, message):
    from compression.errors import RecipeError
    from compression.recipe import Recipe
    from conftest import tiny_recipe_dict

    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data, x=["export", {"quantize_weights_4bit": options}]))
