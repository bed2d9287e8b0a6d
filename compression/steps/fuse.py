"""Fuse, then quantize: ONNX Runtime's transformer optimizer on the exported graph.

The optimizer rewrites BERT's subgraphs into ORT's fused CPU kernels: Attention (one op per
layer, also for pruned layers with their own head counts), SkipLayerNormalization,
EmbedLayerNormalization and BiasGelu. Placed before ``quantize_dynamic``, the quantizer turns
Attention into QAttention and the embeddings into QEmbedLayerNormalization, as ORT's own docs
advise for transformer models on CPU. ORT fuses an *unquantized* graph by itself when a
session opens, so the step pays where the int8 quantizer would otherwise break the patterns
ORT looks for; BENCHMARKS.md has the side-by-side.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..errors import OnnxError
from ..logs import muted
from ..modeling import require
from ..registry import register_step

log = logging.getLogger(__name__)
# ORT's attention fusion compares each layer's attention width with the model's hidden size and warns when they
# differ, as they do by design once heads are pruned (the fused op takes the narrower Q/K/V; tests compare logits)
NARROW_ATTENTION = (("fusion_attention", "onnxruntime.transformers.fusion_attention"), ("Input hidden size (%d) is not same",))
FUSED = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu")


@dataclass(frozen=True)
class FuseConfig:
    """Fields:
        opt_level: 1 = the fusions above only, a graph that runs on any CPU (2 and 99 add
            layout and hardware-specific rewrites that ORT also applies at session start).
        embed_layer_norm: fuse the embeddings (word + position + type + LayerNorm) into one op.
    """

    opt_level: int = 1
    embed_layer_norm: bool = True

    def __post_init__(self):
        if self.opt_level not in (0, 1, 2, 99):
            raise ValueError(f"opt_level must be 0, 1, 2 or 99, got {self.opt_level}")


def fuse(onnx_path: Path, cfg: FuseConfig) -> dict[str, int]:
    """Rewrite ``onnx_path`` in place with fused transformer ops; returns the count of each fused op."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = cfg.embed_layer_norm
    try:  # num_heads/hidden_size 0: read from each layer's reshapes (pruned layers keep their own head counts)
        with muted(*NARROW_ATTENTION):
            model = optimizer.optimize_model(str(onnx_path), model_type="bert", num_heads=0, hidden_size=0,
                                             optimization_options=options, opt_level=cfg.opt_level)
    except Exception as exc:
        raise OnnxError(f"{onnx_path}: ORT's transformer optimizer failed ({type(exc).__name__}: {str(exc)[:200]})") from None
    model.save_model_to_file(str(onnx_path))
    counts = Counter(n.op_type for n in onnx.load(str(onnx_path), load_external_data=False).graph.node)
    fused = {op: counts[op] for op in FUSED if counts[op]}
    log.info("fused graph: %s", fused or "nothing matched")
    return fused


def _check(cfg: FuseConfig, model_config) -> None:
    require(model_config, "heads_ffn", "attention fusion (ORT's BERT optimizer)")


@register_step("fuse", FuseConfig, stage="onnx", tags=("onnx", "fused"), relation="quantized", check=_check)
def _fuse_step(onnx_path, cfg: FuseConfig, ctx):
    """ORT transformer optimizer: fused Attention/LayerNorm/GELU ops; put it before quantize_dynamic."""
    fuse(onnx_path, cfg)
    return onnx_path
