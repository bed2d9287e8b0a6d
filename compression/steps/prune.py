"""Pruning: unstructured (magnitude/random, one-shot or cubic-gradual), near-zero
thresholding, and structured head/FFN removal ranked by first-order Taylor importance.

Honesty note: unstructured zeros do not make a dense ONNX graph faster or its
file smaller; they only shrink the gzip size. Structured pruning removes rows
and columns, so the graph really gets smaller and faster.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import RecipeError
from ..modeling import encoder_layers, require
from ..registry import register_step
from .training import TrainConfig, kd_finetune, sentence_passes

log = logging.getLogger(__name__)


def encoder_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    """The nn.Linear layers inside the encoder blocks (embeddings/classifier are left alone)."""
    out = []
    for i, layer in enumerate(encoder_layers(model)):
        for name, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear):
                out.append((f"layer.{i}.{name}", mod))
    return out


def sparsity_of(modules) -> float:
    total = sum(m.weight.numel() for _, m in modules)
    return sum(int((m.weight == 0).sum()) for _, m in modules) / total


# ------------------------------------------------------------------ unstructured
@dataclass(frozen=True)
class UnstructuredPruneConfig(TrainConfig):
    """Zero a fraction of encoder Linear weights.

    Fields (plus TrainConfig's, used for KD recovery):
        amount: final fraction of weights set to zero, in [0, 1).
        method: ``l1`` (smallest magnitude) or ``random``.
        scope: ``layer`` (each Linear gets ``amount``) or ``global`` (one ranking over all).
        schedule: ``oneshot`` (prune, then recover) or ``cubic`` (sparsity grows as
            amount·(1−(1−t/T)³) over the first 80% of recovery steps, Zhu & Gupta 2017).
        recovery: KD fine-tuning after/while pruning (False: one-shot without training).
    """

    amount: float = 0.5
    method: str = "l1"
    scope: str = "layer"
    schedule: str = "oneshot"
    recovery: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.amount < 1:
            raise ValueError(f"amount must be in [0, 1), got {self.amount}")
        if self.method not in ("l1", "random") or self.scope not in ("layer", "global"):
            raise ValueError("method must be l1|random and scope layer|global")
        if self.schedule not in ("oneshot", "cubic"):
            raise ValueError("schedule must be oneshot or cubic")
        if self.schedule == "cubic" and not self.recovery:
            raise ValueError("the cubic schedule prunes during fine-tuning: it needs recovery: true")


def compute_masks(modules, amount: float, scope: str, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep-masks zeroing exactly ``amount`` of weights per layer or globally by score."""
    if amount <= 0:
        return {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in modules}
    if scope == "global":
        flat = torch.cat([scores[n].flatten() for n, _ in modules])
        k = int(amount * flat.numel())
        cut = torch.kthvalue(flat, k).values if k > 0 else flat.min() - 1
        return {n: scores[n] > cut for n, _ in modules}
    masks = {}
    for n, m in modules:
        s = scores[n].flatten()
        k = int(amount * s.numel())
        keep = torch.ones_like(s, dtype=torch.bool)
        if k > 0:
            keep[torch.topk(s, k, largest=False).indices] = False
        masks[n] = keep.view_as(m.weight)
    return masks


def _scores(modules, method, seed):
    if method == "random":  # fixed per build so gradual masks stay nested
        g = torch.Generator().manual_seed(seed)
        return {n: torch.rand(m.weight.shape, generator=g) for n, m in modules}
    return {n: m.weight.detach().abs() for n, m in modules}


def prune(model, cfg: UnstructuredPruneConfig, train=None):
    """One-shot/gradual unstructured pruning; ``train(on_step, after_step)`` runs KD recovery."""
    modules = encoder_linears(model)
    rand_scores = _scores(modules, "random", cfg.seed) if cfg.method == "random" else None
    masks: dict[str, torch.Tensor] = {}

    def apply(amount):
        masks.update(compute_masks(modules, amount, cfg.scope, rand_scores or _scores(modules, "l1", cfg.seed)))
        enforce()

    @torch.no_grad()
    def enforce():
        for n, m in modules:
            m.weight.mul_(masks[n])

    if cfg.schedule == "oneshot" or train is None:
        apply(cfg.amount)
        if cfg.recovery and train is not None:
            train(None, lambda *_: enforce())
    else:
        def on_step(step, total):
            ramp = max(1, int(0.8 * total))
            every = max(1, ramp // 10)
            if step % every == 0 or step == ramp:
                apply(cfg.amount * (1 - (1 - min(step, ramp) / ramp) ** 3))

        train(on_step, lambda *_: enforce())
        apply(cfg.amount)  # land exactly on the target
    real = sparsity_of(modules)
    log.info("unstructured pruning: target %.3f, real encoder-Linear sparsity %.4f", cfg.amount, real)
    return model, real


def _check_encoder(cfg, model_config) -> None:
    require(model_config, "encoder", "pruning encoder weights")


def _recovery(state, cfg: TrainConfig, ctx):
    """``train(on_step, after_step)``: KD recovery of ``state.model`` in place."""
    return lambda on_step, after_step: kd_finetune(state, cfg, ctx, on_step, after_step)


@register_step("prune", UnstructuredPruneConfig, stage="torch", tags=("pruned", "sparse"), check=_check_encoder,
               needs_data=lambda cfg: cfg.recovery, work=sentence_passes)
def _prune_step(state, cfg, ctx):
    """Unstructured magnitude/random pruning of encoder Linear weights, KD recovery."""
    state.model, real = prune(state.model, cfg, _recovery(state, cfg, ctx))
    state.notes["encoder_sparsity"] = real
    return state


# ------------------------------------------------------------------ thresholding
@dataclass(frozen=True)
class ThresholdConfig:
    """Set encoder weights with |w| < threshold to exactly zero (the seeds' "compress" step).

    Fields: threshold (>= 0)."""

    threshold: float = 1e-3

    def __post_init__(self):
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")


@torch.no_grad()
def threshold(model, cfg: ThresholdConfig):
    modules = encoder_linears(model)
    for _, m in modules:
        m.weight.masked_fill_(m.weight.abs() < cfg.threshold, 0.0)
    return model, sparsity_of(modules)


@register_step("threshold", ThresholdConfig, stage="torch", tags=("pruned", "sparse"), check=_check_encoder)
def _threshold_step(state, cfg, ctx):
    """Zero near-zero weights (no training)."""
    state.model, state.notes["encoder_sparsity"] = threshold(state.model, cfg)
    return state


# ------------------------------------------------------------------ structured
@dataclass(frozen=True)
class StructuredPruneConfig(TrainConfig):
    """Remove attention heads and FFN neurons ranked by Taylor importance |w·∂L/∂w|.

    Fields (plus TrainConfig's, used for KD recovery):
        heads_fraction: fraction of all heads removed, ranked globally; never empties a layer.
        heads: explicit {layer: [head, ...]} to remove (instead of heads_fraction; by current index in a
            model pruned before).
        ffn_fraction: fraction of FFN neurons removed (in every layer, or overall: ``ffn_ranking``).
        importance_batches: batches used to accumulate importance.
        recovery: KD fine-tuning after removal.
        schedule: ``oneshot`` (rank once, remove everything, then recover) or ``gradual``
            (``events`` equal slices of both fractions, each ranked afresh on its share of the
            importance batches, spread over the first ``ramp`` of the recovery steps; removed
            units are held at zero until training ends, then physically removed).
        events, ramp: the gradual schedule's number of removals and the share of recovery steps they span.
        compensate: before removal, add each removed FFN neuron's mean activation (over the real
            tokens of the importance batches) through its output column to the FFN's output bias, so
            the pruned model starts from the teacher's average signal instead of a hole in it (bias
            compensation, as in FLAP, An et al. 2024; heads are not compensated, see
            ``compensate_biases``); one-shot schedule only. Costs one forward pass over the batches.
        reconstruct: before removal, refit each layer's attention-output and FFN-output weights on the
            units it keeps, by least squares, to give what the whole layer gave on the real tokens of the
            importance batches (the kept inputs' Gram matrix, damped by ``reconstruct_damp`` of its mean
            diagonal; Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers",
            and OBS-style compensation). Subsumes ``compensate``; one-shot schedule only. Costs one
            forward pass over the batches.
        normalize_heads: divide each layer's head importances by their L2 norm before the global ranking
            (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): raw Taylor scores differ
            in scale between layers, so the global ranking otherwise empties some layers of heads first.
        ffn_ranking: ``layer`` removes ``ffn_fraction`` of every layer's neurons (uniform sizes); ``global``
            ranks all layers' neurons together, as heads are, and removes the least important
            ``ffn_fraction`` of them wherever they are (each layer keeps at least one), so layers keep
            different widths (recorded in the config as ``intermediate_sizes``); one-shot schedule only.
    """

    heads_fraction: float = 0.0
    heads: dict | None = None
    ffn_fraction: float = 0.0
    importance_batches: int = 16
    recovery: bool = True
    schedule: str = "oneshot"
    events: int = 4
    ramp: float = 0.5
    compensate: bool = False
    reconstruct: bool = False
    reconstruct_damp: float = 0.01
    normalize_heads: bool = False
    ffn_ranking: str = "layer"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.heads_fraction < 1 or not 0 <= self.ffn_fraction < 1:
            raise ValueError("heads_fraction and ffn_fraction must be in [0, 1)")
        if self.heads is not None:
            object.__setattr__(self, "heads", {int(k): sorted(int(h) for h in v) for k, v in self.heads.items()})
            if self.heads_fraction:
                raise ValueError("set heads_fraction or heads, not both")
        if self.compensate and self.reconstruct:
            raise ValueError("set compensate or reconstruct, not both (reconstruct refits the biases too)")
        if not self.reconstruct_damp > 0:
            raise ValueError(f"reconstruct_damp must be > 0, got {self.reconstruct_damp}")
        if self.ffn_ranking not in ("layer", "global"):
            raise ValueError(f"ffn_ranking must be layer or global, got {self.ffn_ranking!r}")
        if self.schedule not in ("oneshot", "gradual"):
            raise ValueError(f"schedule must be oneshot or gradual, got {self.schedule!r}")
        if self.schedule == "gradual":
            if not self.recovery:
                raise ValueError("the gradual schedule removes units during KD recovery: it needs recovery: true")
            if self.heads is not None:
                raise ValueError("the gradual schedule ranks heads as it goes: set heads_fraction, not heads")
            if self.events < 1 or not 0 < self.ramp <= 1:
                raise ValueError(f"events must be >= 1 and ramp in (0, 1], got {self.events} and {self.ramp}")
            if self.compensate or self.reconstruct:
                raise ValueError("compensate and reconstruct work with the oneshot schedule only")
            if self.ffn_ranking != "layer":
                raise ValueError("ffn_ranking: global works with the oneshot schedule only")

    def __hash__(self):
        return hash((self.heads_fraction, self.ffn_fraction, str(self.heads), self.schedule, self.events, self.ramp, self.compensate,
                     self.reconstruct, self.reconstruct_damp, self.normalize_heads, self.ffn_ranking))


def _check_structured(cfg: StructuredPruneConfig, config, counts: list[int] | None = None) -> None:
    """``counts``: each layer's heads as the step finds them (the model the chain hands over, which an
    earlier distill or pruning may have shrunk); by default the base config's, as preflight sees it."""
    require(config, "heads_ffn", "structured pruning")
    if cfg.heads:
        check_heads(cfg.heads, counts or [config.num_attention_heads] * config.num_hidden_layers)


def head_counts(model) -> list[int]:
    """Heads each encoder layer has now (they differ after a pruning)."""
    return [layer.attention.self.num_attention_heads for layer in encoder_layers(model)]


def check_heads(heads: dict[int, list[int]], counts: list[int]) -> None:
    """Explicit heads (by current index) against each layer's head count: a RecipeError before anything
    is removed."""
    for layer, hs in heads.items():
        if not 0 <= layer < len(counts):
            raise RecipeError(f"heads {{{layer}: {hs}}} is outside {len(counts)} layers")
        n = counts[layer]
        if any(not 0 <= h < n for h in hs):
            raise RecipeError(f"heads {{{layer}: {hs}}}: layer {layer} has {n} heads at this step (an earlier step "
                              f"may have removed some); number them 0..{n - 1}")
        if len(set(hs)) >= n:
            raise RecipeError(f"pruning every head of layer {layer} would disconnect it: it has {n} heads at this step; "
                              "keep at least one")


def _autocast(precision: str):
    """The forward of importance and means passes: bf16 autocast on the CPU when ``precision`` is bf16
    (weights and gradients stay fp32), as training does."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16" and not torch.cuda.is_available())


def taylor_importance(model, batches, precision: str = "fp32") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Accumulated |w·∂L/∂w| per head [layers, heads] and per FFN neuron (list per layer).

    A model whose heads were pruned before keeps different head counts per layer: row ``i`` holds
    layer ``i``'s living heads by their current index, and the slots past its count are +inf (never
    ranked below a living head; ``select_heads`` reads each layer's count from them).

    ``precision`` "bf16": forward under bf16 autocast (weights and their gradients stay fp32), as training does.
    Dropout is off (eval mode; gradients flow all the same): with it on, the ranking drew its masks from
    the process's random state, so which units a build removed depended on what ran before it (a
    resumed build, a sweep's row order), not on the recipe alone."""
    layers = encoder_layers(model)
    counts = head_counts(model)
    d = layers[0].attention.self.attention_head_size
    heads = torch.zeros(len(layers), max(counts))
    for i, n in enumerate(counts):
        heads[i, n:] = float("inf")
    ffn = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    for batch, labels in batches:
        model.zero_grad(set_to_none=True)
        with _autocast(precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        F.cross_entropy(logits.float(), labels.to(device)).backward()
        with torch.no_grad():
            for i, layer in enumerate(layers):
                att = layer.attention
                n = counts[i]
                for lin in (att.self.query, att.self.key, att.self.value):
                    s = (lin.weight * lin.weight.grad).abs().sum(1) + (lin.bias * lin.bias.grad).abs()
                    heads[i, :n] += s.view(n, d).sum(1).cpu()
                o = att.output.dense
                heads[i, :n] += (o.weight * o.weight.grad).abs().sum(0).view(n, d).sum(1).cpu()
                inter, out = layer.intermediate.dense, layer.output.dense
                ffn[i] += ((inter.weight * inter.weight.grad).abs().sum(1) + (inter.bias * inter.bias.grad).abs()).cpu()
                ffn[i] += (out.weight * out.weight.grad).abs().sum(0).cpu()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return heads, ffn


def select_heads(importance: torch.Tensor, fraction: float) -> dict[int, list[int]]:
    """Globally least important heads, never all heads of one layer (by current index; +inf slots are
    heads a layer no longer has, see ``taylor_importance``)."""
    n_layers, n_heads = importance.shape
    alive = torch.isfinite(importance).sum(1).tolist()
    k = int(round(fraction * sum(alive)))
    order = torch.argsort(importance.flatten()).tolist()
    chosen: dict[int, list[int]] = {}
    for idx in order:
        if k == 0:
            break
        layer, head = divmod(idx, n_heads)
        if head < alive[layer] and len(chosen.get(layer, [])) < alive[layer] - 1:
            chosen.setdefault(layer, []).append(head)
            k -= 1
    return {layer: sorted(h) for layer, h in chosen.items()}


@torch.no_grad()
def shrink_ffn(model, keep: list[torch.Tensor]) -> None:
    """Physically drop FFN neurons: rows of intermediate.dense, columns of output.dense."""
    for layer, idx in zip(encoder_layers(model), keep):
        inter, out = layer.intermediate.dense, layer.output.dense
        new_inter = torch.nn.Linear(inter.in_features, len(idx))
        new_inter.weight.copy_(inter.weight[idx]), new_inter.bias.copy_(inter.bias[idx])
        new_out = torch.nn.Linear(len(idx), out.out_features)
        new_out.weight.copy_(out.weight[:, idx]), new_out.bias.copy_(out.bias)
        layer.intermediate.dense, layer.output.dense = new_inter, new_out
    sizes = [len(k) for k in keep]
    model.config.intermediate_size = max(sizes)
    if len(set(sizes)) > 1:
        model.config.intermediate_sizes = sizes  # per layer: see load_classifier
    elif hasattr(model.config, "intermediate_sizes"):  # equal again: an earlier record would describe other shapes
        del model.config.intermediate_sizes


def original_heads(config, heads: dict[int, list[int]]) -> dict[int, list[int]]:
    """Heads by current index (as ranked on the model as it is) -> by the index they had before any
    pruning, which transformers' ``prune_heads`` and ``config.pruned_heads`` speak: in a layer that lost
    head 0 before, current head 0 is head 1."""
    gone = {int(k): set(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    out = {}
    for layer, hs in heads.items():
        left = [h for h in range(config.num_attention_heads) if h not in gone.get(int(layer), set())]
        out[layer] = [left[h] for h in hs]
    return out


def prune_heads_ffn(model, heads_to_prune: dict[int, list[int]], ffn_keep: list[torch.Tensor] | None):
    """Remove heads (by current index) and keep the listed FFN neurons of every layer."""
    if heads_to_prune:
        model.prune_heads(original_heads(model.config, heads_to_prune))  # transformers records them in config.pruned_heads
    if ffn_keep is not None:
        shrink_ffn(model, ffn_keep)
    return model


def removed_mask(n: int, keep: torch.Tensor, device=None) -> torch.Tensor:
    """True for each of ``n`` FFN neurons not in ``keep`` (the ones a pruning removes)."""
    dead = torch.ones(n, dtype=torch.bool, device=device)
    dead[keep.to(dead.device)] = False
    return dead


def select_units(head_imp, ffn_imp, cfg: StructuredPruneConfig, scale: float = 1.0, removed=None, kept=None):
    """Heads to remove and FFN neurons to keep at ``scale`` of the config's fractions.

    ``removed`` / ``kept``: an earlier, smaller selection; its removed units rank below every
    living one, so each selection contains the one before it (a gradual schedule never revives)."""
    head_imp = head_imp.clone()
    if cfg.normalize_heads:  # each layer's living heads only (+inf marks a head already gone)
        norm = torch.where(torch.isfinite(head_imp), head_imp, 0.0).norm(dim=1, keepdim=True).clamp_min(1e-12)
        head_imp = head_imp / norm
    for layer, hs in (removed or {}).items():
        head_imp[layer, hs] = -1.0
    heads = cfg.heads if cfg.heads is not None else select_heads(head_imp, cfg.heads_fraction * scale)
    keep = None
    if cfg.ffn_fraction and cfg.ffn_ranking == "global":
        keep = select_ffn_global(ffn_imp, cfg.ffn_fraction)
    elif cfg.ffn_fraction:
        keep = []
        for i, score in enumerate(ffn_imp):  # each layer's own width: a globally ranked model's layers differ
            n_keep = max(1, int(round(score.numel() * (1 - cfg.ffn_fraction * scale))))
            score = score.clone()
            if kept is not None:
                score[removed_mask(score.numel(), kept[i])] = -1.0
            keep.append(torch.sort(torch.topk(score, n_keep).indices).values)
    return heads, keep


def select_ffn_global(ffn_imp: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """FFN neurons to keep per layer when the least important ``fraction`` of all layers' neurons go,
    ranked together (raw scores, as heads are); every layer keeps at least its best neuron."""
    sizes = [s.numel() for s in ffn_imp]
    k = int(round(fraction * sum(sizes)))
    flat = torch.cat([s.float() for s in ffn_imp])
    best = torch.cat([torch.arange(n) == int(s.argmax()) for n, s in zip(sizes, ffn_imp)])
    flat = torch.where(best, torch.full_like(flat, float("inf")), flat)
    dead = torch.zeros(flat.numel(), dtype=torch.bool)
    dead[torch.argsort(flat)[:k]] = True
    return [torch.nonzero(~d).flatten() for d in torch.split(dead, sizes)]


@torch.no_grad()
def zero_units(model, heads: dict[int, list[int]], keep: list[torch.Tensor] | None) -> None:
    """Hold removed units at zero without changing shapes: a head's query/key/value rows and its
    output columns, an FFN neuron's input row and output column. Its contribution is then exactly
    0, so removing it physically later leaves the logits unchanged."""
    for i, layer in enumerate(encoder_layers(model)):
        att = layer.attention
        d = att.self.attention_head_size
        for h in heads.get(i, []):
            rows = slice(h * d, (h + 1) * d)
            for lin in (att.self.query, att.self.key, att.self.value):
                lin.weight[rows] = 0
                lin.bias[rows] = 0
            att.output.dense.weight[:, rows] = 0
        if keep is not None:
            inter, out = layer.intermediate.dense, layer.output.dense
            dead = removed_mask(inter.out_features, keep[i], inter.weight.device)
            inter.weight[dead] = 0
            inter.bias[dead] = 0
            out.weight[:, dead] = 0


@torch.no_grad()
def ffn_means(model, batches, precision: str = "fp32") -> list[torch.Tensor]:
    """Per layer, each FFN neuron's mean activation over the real (non-padding) tokens of ``batches``."""
    layers = encoder_layers(model)
    sums = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    state = {"mask": None, "tokens": 0.0}

    def add(i):
        def hook(module, args, out):
            sums[i] += (out.float() * state["mask"]).sum((0, 1)).cpu()
        return hook

    def on_batch(mask):
        state["mask"] = mask.unsqueeze(-1).float()
        state["tokens"] += float(mask.sum())

    _hooked_pass(model, batches, precision, [layer.intermediate.register_forward_hook(add(i)) for i, layer in enumerate(layers)],
                 on_batch)
    return [s / max(state["tokens"], 1.0) for s in sums]


def _hooked_pass(model, batches, precision: str, handles, on_batch) -> None:
    """One eval-mode forward over ``batches`` for the forward ``handles`` to observe (removed after; the
    model's training mode restored); ``on_batch(attention_mask)`` before each batch."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    try:
        for batch, _ in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            on_batch(batch["attention_mask"])
            with _autocast(precision):
                model(**batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def compensate_biases(model, keep: list[torch.Tensor] | None, means: list[torch.Tensor]) -> None:
    """Fold the mean activation of the FFN neurons about to be removed, through their output
    columns, into the output bias. Heads are not compensated: a first version that folded a removed
    head's mean context into the attention-output bias sent the pruned demo teacher to chance before
    recovery (BENCHMARKS.md); the classifier reads one token, not the mean over tokens."""
    if keep is None:
        return
    for i, layer in enumerate(encoder_layers(model)):
        out = layer.output.dense
        dead = removed_mask(out.in_features, keep[i])
        out.bias += out.weight[:, dead.to(out.weight.device)] @ means[i][dead].to(out.weight)


@torch.no_grad()
def input_grams(model, batches, precision: str = "fp32") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the Gram matrices [x 1]ᵀ[x 1] (float64, the last row/column the bias's constant input)
    of what the attention-output dense and the FFN-output dense read, over the real tokens of ``batches``."""
    layers = encoder_layers(model)
    grams: list[list] = [[None, None] for _ in layers]
    state = {"mask": None}

    def add(i, j):
        def hook(module, args):
            x = args[0].float()[state["mask"]].double()
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
            g = x.T @ x
            grams[i][j] = g if grams[i][j] is None else grams[i][j] + g
        return hook

    handles = [h for i, layer in enumerate(layers) for h in (layer.attention.output.dense.register_forward_pre_hook(add(i, 0)),
                                                              layer.output.dense.register_forward_pre_hook(add(i, 1)))]
    _hooked_pass(model, batches, precision, handles, lambda mask: state.update(mask=mask.bool()))
    return [(a, b) for a, b in grams]


@torch.no_grad()
def refit(linear: torch.nn.Linear, gram: torch.Tensor, kept: torch.Tensor, damp: float) -> None:
    """Least-squares refit of ``linear`` on its ``kept`` input columns (and bias) so that, on the inputs
    ``gram`` summarises, it gives what it gave with all of them: W' = (G_kk + λI)⁻¹ G_k,all [W b]ᵀ.
    The other columns are left as they are (the pruning removes them)."""
    n = linear.in_features
    cols = torch.cat([kept.cpu(), torch.tensor([n])])  # the bias's constant input is always kept
    full = torch.cat([linear.weight.T, linear.bias[None]], 0).double().cpu()  # [n+1, out]
    g = gram[cols][:, cols]
    g = g + damp * g.diagonal().mean() * torch.eye(len(cols), dtype=g.dtype)
    new = torch.linalg.solve(g, gram[cols] @ full).to(linear.weight)
    linear.weight[:, kept.to(linear.weight.device)] = new[:-1].T
    linear.bias.copy_(new[-1])


def reconstruct_outputs(model, heads: dict[int, list[int]], keep: list[torch.Tensor] | None, grams, damp: float) -> None:
    """Refit every layer's attention-output dense on the context columns of its kept heads and its
    FFN-output dense on its kept neurons (``refit``), from the unpruned model's ``input_grams``."""
    for i, layer in enumerate(encoder_layers(model)):
        att = layer.attention
        gone = heads.get(i, [])
        if gone:
            d = att.self.attention_head_size
            n_heads = att.output.dense.in_features // d
            kept = torch.cat([torch.arange(h * d, (h + 1) * d) for h in range(n_heads) if h not in gone])
            refit(att.output.dense, grams[i][0], kept, damp)
        if keep is not None and len(keep[i]) < layer.output.dense.in_features:
            refit(layer.output.dense, grams[i][1], keep[i], damp)


def _gradual(model, cfg: StructuredPruneConfig, batches, precision: str, train):
    """Remove ``1/events`` of the target at each of ``events`` evenly spaced recovery steps (the first
    at step 0), each ranked on a fresh share of ``batches`` by the model as trained so far."""
    chosen = {"heads": {}, "keep": None, "done": 0}
    share = max(1, len(batches) // cfg.events)

    def advance(due: int, part) -> None:
        """Remove up to ``due/events`` of the target, ranked on ``part``; earlier removals stay removed."""
        heads, keep = select_units(*taylor_importance(model, part, precision), cfg, due / cfg.events, chosen["heads"], chosen["keep"])
        chosen.update(heads=heads, keep=keep, done=due)
        zero_units(model, heads, keep)

    def on_step(step, total):
        marks = [int(k * cfg.ramp * total / cfg.events) for k in range(cfg.events)]
        due = sum(m <= step for m in marks)
        if due > chosen["done"]:  # between events, after_step has already held the removed units at zero
            advance(due, batches[(due - 1) * share : due * share] or batches)
            log.info("gradual pruning %d/%d at step %d: %d heads out, FFN %s kept", due, cfg.events, step,
                     sum(map(len, chosen["heads"].values())), None if chosen["keep"] is None else len(chosen["keep"][0]))

    train(on_step, lambda *_: zero_units(model, chosen["heads"], chosen["keep"]))
    if chosen["done"] < cfg.events:  # fewer recovery steps than events: land on the target anyway
        advance(cfg.events, batches[-share:])
    return chosen["heads"], chosen["keep"]


def structured_prune(model, cfg: StructuredPruneConfig, batches, train=None):
    """Remove heads and FFN neurons (``cfg.schedule``); ``train(on_step, after_step)`` runs KD recovery."""
    from ..machine import training_precision

    _check_structured(cfg, model.config, head_counts(model) if cfg.heads else None)
    precision = training_precision(cfg.precision)
    before = sum(p.numel() for p in encoder_layers(model).parameters())
    gradual = cfg.schedule == "gradual" and train is not None
    if gradual:  # recovery runs inside: units held at zero while training, removed below
        heads, keep = _gradual(model, cfg, batches, precision, train)
    else:
        heads, keep = select_units(*taylor_importance(model, batches, precision), cfg)
        if cfg.compensate:
            compensate_biases(model, keep, ffn_means(model, batches, precision))
        if cfg.reconstruct:
            reconstruct_outputs(model, heads, keep, input_grams(model, batches, precision), cfg.reconstruct_damp)
    named = original_heads(model.config, heads)  # by the index before any pruning, as config.pruned_heads
    prune_heads_ffn(model, heads, keep)
    if not gradual and cfg.recovery and train is not None:
        train(None, None)
    after = sum(p.numel() for p in encoder_layers(model).parameters())
    left = head_counts(model)
    ffn = [layer.intermediate.dense.out_features for layer in encoder_layers(model)]
    log.info("structured pruning (%s): %d heads removed (heads left per layer: %s), FFN neurons per layer %s, encoder params %d -> %d "
             "(%.2fx fewer)", cfg.schedule, sum(map(len, heads.values())), left, ffn, before,
             after, before / after)
    return model, {"encoder_params_before": before, "encoder_params": after, "pruned_heads": {str(k): v for k, v in named.items()}}


def importance_batches(tokenizer, data, n_batches: int, batch_size: int, max_length: int, seed: int):
    idx = list(range(len(data)))
    random.Random(seed).shuffle(idx)
    out = []
    for b in range(n_batches):
        sel = idx[b * batch_size : (b + 1) * batch_size]
        if not sel:
            break
        enc = tokenizer([data.texts[i] for i in sel], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out.append((enc, torch.tensor([data.labels[i] for i in sel])))
    return out


@register_step("prune_structured", StructuredPruneConfig, stage="torch", tags=("pruned", "structured"), check=_check_structured,
               needs_data=True, work=sentence_passes)  # Taylor importance needs labelled batches even without recovery
def _structured_step(state, cfg, ctx):
    """Remove attention heads and FFN neurons (Taylor-ranked), then KD recovery."""
    batches = importance_batches(state.tokenizer, ctx.splits["train"], cfg.importance_batches, cfg.batch_size,
                                 ctx.recipe.dataset.max_length, cfg.seed)
    state.model, info = structured_prune(state.model, cfg, batches, _recovery(state, cfg, ctx))
    state.notes.update(info)
    return state

