"""4-bit block quantization (ONNX Runtime's MatMulNBits / GatherBlockQuantized).

Where 4 bits pay on CPU: the word-embedding table. It is half of MiniLM (30,522 x 384)
and a Gather does no arithmetic, so storing it as 4-bit blocks halves what int8 leaves
(11.7 -> ~6 MB) at almost no speed cost (stored as uint8 bytes: ORT's int4-typed kernel costs
about 3 us a token), while the MatMuls stay int8 and fast
(``quantize_embeddings_4bit`` after ``quantize_dynamic``). ``quantize_weights_4bit``
makes every MatMul weight-only 4-bit too: the smallest file, but MatMulNBits dequantizes
per block at run time and is slower than int8 MatMulInteger on x86 (a size-first row
whose latency the report shows).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..logs import muted
from ..registry import register_step
from .export import load_onnx

log = logging.getLogger(__name__)
WORD_IDS = "input_ids"


def _check_block(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")


def _check_scales(scales: str) -> None:
    if scales not in ("float16", "float32"):
        raise ValueError(f"scales must be float16 or float32, got {scales!r}")


@dataclass(frozen=True)
class Embeddings4bitConfig:
    """The word-embedding table as 4-bit blocks (GatherBlockQuantized).

    Fields:
        block_size: values sharing one scale along the hidden axis (power of two >= 16);
            smaller blocks are more accurate and add one float scale per block.
        symmetric: zero-point-free blocks (int4 in [-8, 7]); false stores a zero point per block.
        scales: float16 stores the blocks' scales in half the bytes (a Cast back to float32 follows the
            Gather): at 64 values a block the scales are a ninth of the table, 3-5% of a vocabulary-pruned
            or 4-bit file; float32 is ORT's own layout (BENCHMARKS.md, "float16 scales").
    """

    block_size: int = 64
    symmetric: bool = True
    scales: str = "float16"

    def __post_init__(self):
        _check_block(self.block_size)
        _check_scales(self.scales)


@dataclass(frozen=True)
class Weights4bitConfig:
    """Weight-only 4-bit MatMuls (MatMulNBits) and, optionally, 4-bit embeddings.

    Fields:
        block_size: values per scale along the input axis (power of two >= 16).
        symmetric: zero-point-free blocks.
        accuracy_level: MatMulNBits compute type (0 default, 1 fp32, 2 fp16, 3 bf16, 4 int8);
            4 lets x86 use int8 dot products on the dequantized blocks.
        embeddings: also quantize the word-embedding Gather to 4 bits.
        scales: the embedding blocks' scales, as in ``Embeddings4bitConfig`` (MatMulNBits keeps float32
            scales: they must match its float32 input).
    """

    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    embeddings: bool = True
    scales: str = "float16"

    def __post_init__(self):
        _check_block(self.block_size)
        _check_scales(self.scales)
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level must be 0..4, got {self.accuracy_level}")


def word_embedding_gather(model: onnx.ModelProto) -> onnx.NodeProto:
    """The Gather that reads the word-embedding table with the graph's ``input_ids``."""
    consts = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] == WORD_IDS and node.input[0] in consts:
            return node
    raise ValueError("no word-embedding Gather reading input_ids from a constant table (already 4-bit?)")


def dequantize_gather(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.NodeProto:
    """An int8 table (Gather -> DequantizeLinear, as ORT dynamic int8 leaves it) back to an
    exact float table, so it can be re-blocked to 4 bits. Float tables are left as they are."""
    g = model.graph
    consumers = [n for n in g.node if node.output[0] in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "DequantizeLinear":
        return node
    dq = consumers[0]
    inits = {t.name: t for t in g.initializer}
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 and dq.input[2] else 0.0
    name = node.input[0] + "_float"
    g.initializer.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), name))
    node.input[0] = name
    node.output[0] = dq.output[0]
    g.node.remove(dq)
    return node


def half_gather_scales(model: onnx.ModelProto) -> int:
    """Each GatherBlockQuantized's float32 scales as float16, its output cast back to float32 for the
    rest of the graph (the op's output has its scales' type). Returns how many were rewritten (Gathers
    whose scales are float16 already are left as they are)."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized" and inits[n.input[2]].data_type == onnx.TensorProto.FLOAT]
    for node in nodes:
        scales = inits[node.input[2]]
        scales.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scales).astype(np.float16), scales.name))
        out = node.output[0]
        node.output[0] = out + "_fp16"
        cast = onnx.helper.make_node("Cast", [node.output[0]], [out], to=onnx.TensorProto.FLOAT, name=node.name + "_to_float")
        model.graph.node.insert(list(model.graph.node).index(node) + 1, cast)
    return len(nodes)


def _pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Unsigned 4-bit values (0..15) two to a byte along the last axis, the first in the low nibble
    (ONNX's int4 order); an odd last axis is padded with a zero nibble."""
    u = values.astype(np.uint8)
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros(u.shape[:-1] + (1,), np.uint8)], axis=-1)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def pack_gather_uint8(model: onnx.ModelProto) -> int:
    """Each GatherBlockQuantized's int4/uint4 table (and uint4 zero points) stored as uint8 bytes with
    ``bits=4``: the same values (ORT reads uint8 4-bit data with a default zero point of 8, so a
    symmetric int4 value v is stored as v + 8), read by ORT's uint8 kernel, which on x86 is several
    times faster per token than its int4 one in ORT 1.32 (BENCHMARKS.md, "4-bit gather").
    Returns how many Gathers were rewritten."""
    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        if node.op_type != "GatherBlockQuantized" or inits[node.input[0]].data_type not in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            continue
        table = inits[node.input[0]]
        zeros_name = node.input[3] if len(node.input) > 3 else ""
        values = numpy_helper.to_array(table).astype(np.int16)
        if table.data_type == onnx.TensorProto.INT4:
            if zeros_name:
                continue  # int4 with zero points: not what ORT's quantizer writes; left as it is
            values = values + 8
        table.CopyFrom(numpy_helper.from_array(_pack_nibbles(values), table.name))
        if zeros_name:
            zeros = inits[zeros_name]
            zeros.CopyFrom(numpy_helper.from_array(_pack_nibbles(numpy_helper.to_array(zeros).astype(np.int16)), zeros.name))
        node.attribute.append(onnx.helper.make_attribute("bits", 4))
        done += 1
    return done


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input}
    live = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)


# the quantizer raises opset and IR version for int4 and says so at WARNING on every call; the written graph is
# checked (ORT opens it, tests compare its logits), so these two lines are noise in a build log
INT4_UPGRADE = (("onnxruntime.quantization.matmul_nbits_quantizer",),
                ("The opset of the input model is under 21", "The IR version of the input model is"))


def quantize_4bit(onnx_path: Path, block_size: int, symmetric: bool, matmuls: bool, embeddings: bool,
                  accuracy_level: int = 4, scales: str = "float16", pack: bool = True) -> dict:
    """Rewrite ``onnx_path`` in place; returns counts of the 4-bit nodes written. ``pack=False`` keeps
    the embedding table as ORT's quantizer writes it (int4-typed), for side-by-side timing only."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = load_onnx(onnx_path)
    op_types, exclude = [], []
    if embeddings:
        gather = dequantize_gather(model, word_embedding_gather(model))
        op_types.append("Gather")
        exclude += [n.name for n in model.graph.node if n.op_type == "Gather" and n is not gather]
    if matmuls:
        consts = {t.name for t in model.graph.initializer}
        if not any(n.op_type == "MatMul" and n.input[1] in consts for n in model.graph.node):
            raise ValueError("no float MatMul weights to quantize: put quantize_weights_4bit on a float graph, "
                             "not after quantize_dynamic/quantize_static")
        op_types.append("MatMul")
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, accuracy_level=accuracy_level,
                                          op_types_to_quantize=tuple(op_types), quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=exclude, algo_config=config)
    with muted(*INT4_UPGRADE):
        quantizer.process()
    out = quantizer.model.model
    if embeddings and scales == "float16":
        half_gather_scales(out)
    if embeddings and pack:
        pack_gather_uint8(out)
    drop_unused_initializers(out)
    onnx.save(out, str(onnx_path))
    counts = {op: sum(n.op_type == op for n in out.graph.node) for op in ("MatMulNBits", "GatherBlockQuantized")}
    log.info("4-bit: %s, %.1f MB", counts, Path(onnx_path).stat().st_size / 1e6)
    return counts


@register_step("quantize_embeddings_4bit", Embeddings4bitConfig, stage="onnx", tags=("4-bit", "quantized", "onnx"),
               relation="quantized")
def _embeddings_step(onnx_path, cfg: Embeddings4bitConfig, ctx):
    """Word-embedding table as 4-bit blocks; composes after quantize_dynamic (MatMuls stay int8)."""
    quantize_4bit(onnx_path, cfg.block_size, cfg.symmetric, matmuls=False, embeddings=True, scales=cfg.scales)
    return onnx_path


@register_step("quantize_weights_4bit", Weights4bitConfig, stage="onnx", tags=("4-bit", "quantized", "onnx"),
               relation="quantized")
def _weights_step(onnx_path, cfg: Weights4bitConfig, ctx):
    """Weight-only 4-bit MatMuls (MatMulNBits): smallest file, slower than int8 on x86 CPUs."""
    quantize_4bit(onnx_path, cfg.block_size, cfg.symmetric, matmuls=True, embeddings=cfg.embeddings,
                  accuracy_level=cfg.accuracy_level, scales=cfg.scales)
    return onnx_path
