"""Quantization-aware training: fake-quant int8 in every encoder Linear during KD
fine-tuning, exported as a QDQ ONNX graph with int8 weights stored as int8.

Weights: symmetric int8 (per-channel by default). Activations: asymmetric uint8
with ranges tracked by an exponential moving average during training and frozen
for export. ``torch.fake_quantize_*`` export to QuantizeLinear/DequantizeLinear;
``fold_weight_quantizers`` then stores Q(W) as int8 initializers so the file
shrinks like any int8 model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from ..modeling import encoder_layers, require
from ..registry import register_step
from .training import TrainConfig, kd_finetune, sentence_passes

log = logging.getLogger(__name__)


class FakeQuantLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, per_channel: bool = True, momentum: float = 0.9):
        super().__init__()
        self.linear, self.per_channel, self.momentum = linear, per_channel, momentum
        self.register_buffer("act_min", torch.zeros(()))
        self.register_buffer("act_max", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self.frozen = False

    def _qparams(self):
        lo, hi = torch.minimum(self.act_min, torch.zeros(())), torch.maximum(self.act_max, torch.zeros(()))
        scale = ((hi - lo) / 255).clamp_min(1e-8)
        zp = torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.int32)
        w = self.linear.weight.detach()
        ws = (w.abs().amax(1) if self.per_channel else w.abs().max()) / 127
        return scale, zp, ws.clamp_min(1e-8)

    @torch.no_grad()
    def freeze(self):
        """Fix all quantization parameters as buffers: the export then sees constants
        (foldable Q(W), no range arithmetic left in the graph)."""
        scale, zp, ws = self._qparams()
        self.register_buffer("act_scale", scale)
        self.register_buffer("act_zp", zp)
        self.register_buffer("w_scale", ws)
        self.frozen = True

    @property
    def weight(self):  # so code that inspects .weight (stats, pruning) still works
        return self.linear.weight

    def forward(self, x):
        if self.training:
            lo, hi = x.detach().min(), x.detach().max()
            if not bool(self.seen):
                self.act_min.copy_(lo), self.act_max.copy_(hi), self.seen.fill_(True)
            else:
                self.act_min.mul_(self.momentum).add_((1 - self.momentum) * lo)
                self.act_max.mul_(self.momentum).add_((1 - self.momentum) * hi)
        scale, zp, ws = (self.act_scale, self.act_zp, self.w_scale) if self.frozen else self._qparams()
        xq = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)
        w = self.linear.weight
        if self.per_channel:
            wq = torch.fake_quantize_per_channel_affine(w, ws, torch.zeros_like(ws, dtype=torch.int32), 0, -128, 127)
        else:
            wq = torch.fake_quantize_per_tensor_affine(w, ws, torch.zeros((), dtype=torch.int32), -128, 127)
        return F.linear(xq, wq, self.linear.bias)


class FakeQuantEmbedding(torch.nn.Module):
    """Word embeddings with per-row symmetric int8 weights (the table is half of MiniLM)."""

    def __init__(self, emb: torch.nn.Embedding):
        super().__init__()
        self.emb = emb
        self.frozen = False

    @property
    def weight(self):
        return self.emb.weight

    def _scale(self):
        return (self.emb.weight.detach().abs().amax(1) / 127).clamp_min(1e-8)

    @torch.no_grad()
    def freeze(self):
        self.register_buffer("w_scale", self._scale())
        self.frozen = True

    def _quantized(self):
        ws = self.w_scale if self.frozen else self._scale()
        return torch.fake_quantize_per_channel_affine(self.emb.weight, ws, torch.zeros_like(ws, dtype=torch.int32), 0, -128, 127)

    def forward(self, ids):
        if self.training and not self.emb.weight.requires_grad:
            # frozen table (freeze_embeddings): quantize it once, not every step
            if getattr(self, "_cached", None) is None:
                with torch.no_grad():
                    self._cached = self._quantized()
            wq = self._cached
        else:
            self._cached = None
            wq = self._quantized()
        return F.embedding(ids, wq, self.emb.padding_idx)


def add_fake_quant(model, per_channel: bool = True):
    """Swap every encoder nn.Linear for a FakeQuantLinear and the word embeddings
    for a FakeQuantEmbedding (in place)."""
    model.set_input_embeddings(FakeQuantEmbedding(model.get_input_embeddings()))
    for layer in encoder_layers(model):
        for name, mod in list(layer.named_modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(mod, child_name, FakeQuantLinear(child, per_channel))
    return model


def fold_weight_quantizers(path) -> int:  # noqa: C901 (one pass over the graph, kept together)
    """Replace QuantizeLinear(constant W) with an int8 initializer; returns how many.

    The exporter leaves weights and qparams as initializers or Constant nodes;
    both count as constants here."""
    model = onnx.load(str(path))
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    folded, keep = 0, []
    for node in g.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and all(i in consts for i in node.input):
            w = consts[node.input[0]].astype(np.float32)
            scale = consts[node.input[1]].astype(np.float32)
            zp_t = consts[node.input[2]]
            zp = zp_t.astype(np.int32)
            if scale.ndim == 1 and scale.size > 1:  # per-channel along ``axis``
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * w.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            info = np.iinfo(zp_t.dtype)
            q = np.clip(np.round(w / scale) + zp, info.min, info.max).astype(zp_t.dtype)
            g.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
        else:
            keep.append(node)
    # drop what only fed the folded quantizers (fp32 weights, their Constant nodes)
    while True:
        used = {i for n in keep for i in n.input} | {o.name for o in g.output}
        alive = [n for n in keep if n.op_type != "Constant" or n.output[0] in used]
        if len(alive) == len(keep):
            break
        keep = alive
    del g.node[:]
    g.node.extend(keep)
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    onnx.save(model, str(path))
    return folded


@dataclass(frozen=True)
class QATConfig(TrainConfig):
    """KD fine-tuning with int8 fake quantization (fields: TrainConfig's + per_channel)."""

    per_channel: bool = True


def _check(cfg: QATConfig, model_config) -> None:
    require(model_config, "encoder", "QAT (it wraps encoder Linear layers)")


def _fold(onnx_path) -> None:
    log.info("QAT export: %d weight quantizers folded to int8", fold_weight_quantizers(onnx_path))


@register_step("qat", QATConfig, stage="torch", tags=("int8", "quantized", "qat"), relation="quantized", check=_check,
               needs_data=True, after_export=_fold, work=sentence_passes)
def _qat_step(state, cfg: QATConfig, ctx):
    """Quantization-aware KD fine-tuning; exported as QDQ ONNX with int8 weights."""
    state.model = add_fake_quant(state.model, cfg.per_channel)
    kd_finetune(state, cfg, ctx)
    freeze(state.model)
    return state


def freeze(model):
    for mod in model.modules():
        if isinstance(mod, (FakeQuantLinear, FakeQuantEmbedding)):
            mod.freeze()
    return model
