"""Pruning: requested sparsity reached and kept; structured removal is exact."""
import copy
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compression.errors import RecipeError
from compression.recipe import Recipe
from compression.config import DatasetConfig
from compression.data import load_splits
from compression.modeling import encoder_layers
from compression.steps.training import TrainConfig, distill
from compression.steps.prune import (
    StructuredPruneConfig,
    ThresholdConfig,
    UnstructuredPruneConfig,
    encoder_linears,
    prune,
    importance_batches,
    prune_heads_ffn,
    select_heads,
    select_units,
    sparsity_of,
    structured_prune,
    taylor_importance,
    threshold,
    ffn_means,
    refit,
    zero_units,
)
from compression.build import preflight
from conftest import tiny_recipe_dict


@pytest.fixture()
def model(tiny_model):
    return AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()


@pytest.fixture(scope="module")
def data(tiny_data):
    return load_splits(DatasetConfig(path=str(tiny_data), max_length=32))


def _trainer(model, tok, data, steps=12):
    teacher = copy.deepcopy(model)

    def train(on_step, after_step):
        distill(teacher, model, data["train"], TrainConfig(max_steps=steps, batch_size=8, learning_rate=1e-2), tok,
                max_length=32, on_step=on_step, after_step=after_step)
    return train


@pytest.mark.parametrize("method, scope, schedule", [("l1", "layer", "oneshot"), ("l1", "global", "cubic"),
                                                      ("random", "layer", "oneshot"), ("random", "global", "cubic")])
def test_sparsity_reached_and_masks_stay_zero_after_training(model, tiny_model, data, method, scope, schedule):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = UnstructuredPruneConfig(amount=0.6, method=method, scope=scope, schedule=schedule)
    before = {n: m.weight.detach().clone() for n, m in encoder_linears(model)}
    pruned, real = prune(model, cfg, _trainer(model, tok, data))
    mods = encoder_linears(pruned)
    assert abs(real - 0.6) < 1e-3 and abs(sparsity_of(mods) - 0.6) < 1e-3
    if scope == "layer":
        for n, m in mods:
            assert abs(float((m.weight == 0).float().mean()) - 0.6) < 1e-2, n
    # the 12 recovery steps moved the surviving weights, yet sparsity above is exact:
    # masks were re-applied after every optimizer step
    changed = any(not torch.equal(before[n][m.weight != 0], m.weight[m.weight != 0]) for n, m in mods)
    assert changed, "recovery fine-tuning should have moved the surviving weights"


def test_l1_removes_the_smallest_weights(model):
    mods = encoder_linears(model)
    name, lin = mods[0]
    w = lin.weight.detach().abs().clone()
    prune(model, UnstructuredPruneConfig(amount=0.3, recovery=False))
    kept = w[lin.weight != 0]
    dropped = w[lin.weight == 0]
    assert dropped.max() <= kept.min()


def test_threshold_zeroes_small_weights(model):
    _, sp = threshold(model, ThresholdConfig(threshold=0.02))
    for _, m in encoder_linears(model):
        nz = m.weight[m.weight != 0]
        assert nz.abs().min() >= 0.02
    assert sp > 0.5  # init std 0.02: most |w| < 0.02


def test_structured_removal_equals_zeroing(model, tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(["the acting was superb", "a dull and boring plot twist"], padding=True, return_tensors="pt")
    heads = {0: [1, 3], 1: [0]}
    n_heads = model.config.num_attention_heads
    d = model.config.hidden_size // n_heads
    keep = [torch.arange(0, 512, 2), torch.arange(1, 512, 2)]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for li, layer in enumerate(encoder_layers(zeroed)):
            for h in heads.get(li, []):
                layer.attention.output.dense.weight[:, h * d:(h + 1) * d] = 0  # head contributes nothing
            drop = torch.ones(512, dtype=torch.bool)
            drop[keep[li]] = False
            layer.intermediate.dense.weight[drop] = 0
            layer.intermediate.dense.bias[drop] = 0                            # GELU(0) = 0
        ref = zeroed(**batch).logits
    pruned = prune_heads_ffn(model, heads, keep)
    layer0 = encoder_layers(pruned)[0]
    assert layer0.attention.self.query.weight.shape == (2 * d, model.config.hidden_size)
    assert layer0.intermediate.dense.weight.shape == (256, model.config.hidden_size)
    assert layer0.output.dense.weight.shape == (model.config.hidden_size, 256)
    assert pruned.config.intermediate_size == 256 and pruned.config.pruned_heads == {0: [1, 3], 1: [0]}
    with torch.no_grad():
        torch.testing.assert_close(pruned(**batch).logits, ref, atol=1e-5, rtol=1e-5)


def test_zero_units_then_removal_leaves_logits_unchanged(model, tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(["the acting was superb", "a dull and boring plot twist"], padding=True, return_tensors="pt")
    heads, keep = {0: [0, 2], 1: [3]}, [torch.arange(0, 512, 3), torch.arange(2, 512, 3)]
    with torch.no_grad():
        before = model(**batch).logits
        zero_units(model, heads, keep)
        masked = model(**batch).logits
        removed = prune_heads_ffn(model, heads, keep)(**batch).logits
    assert (masked - before).abs().max() > 1e-4  # the units mattered
    torch.testing.assert_close(removed, masked, atol=1e-5, rtol=1e-5)


def test_the_ranking_depends_on_the_batches_not_on_the_random_state(model, tiny_model, data):
    """A model whose config keeps dropout (MiniLM's 0.1; the demo teacher's saved config too): the units a
    build removes must not depend on what drew from torch's random state before (teacher training or
    not, a resumed build, a sweep's row order). The model's mode is left as it was."""
    assert model.config.hidden_dropout_prob > 0
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batches = importance_batches(tok, data["train"], 4, 16, 32, seed=0)
    model.train()
    ranked = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        ranked.append(taylor_importance(model, batches))
    (h1, f1), (h2, f2) = ranked
    assert h1.abs().sum() > 0
    torch.testing.assert_close(h1, h2)
    for a, b in zip(f1, f2):
        torch.testing.assert_close(a, b)
    assert model.training


def test_ffn_means_count_real_tokens_only(model, tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    short, long = "superb", "a dull and boring plot twist that never ends"
    padded = [(tok([short, long], padding=True, return_tensors="pt"), torch.tensor([1, 0]))]
    alone = [(tok([t], return_tensors="pt"), torch.tensor([0])) for t in (short, long)]
    assert int(padded[0][0]["attention_mask"].sum()) < padded[0][0]["attention_mask"].numel()  # there is padding
    for x, y in zip(ffn_means(model, padded), ffn_means(model, alone)):
        assert x.abs().max() > 0
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("what", ["heads", "ffn"])
def test_compensation_and_reconstruction_bring_the_first_pruned_layer_closer(model, tiny_model, data, what):
    """Layer 0's pruned dense reads the same kept inputs as the unpruned one (heads only, or FFN only),
    so its least-squares refit on the importance batches gives what the whole layer gave more closely
    than the plain removal. For the FFN, bias compensation (the removed neurons' mean: the least-squares
    constant for what they gave) is closer than removal too, and the refit, which also fits the kept
    columns, no further than it."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batches = importance_batches(tok, data["train"], 4, 8, 32, 0)

    def outputs(m):
        layer = encoder_layers(m)[0]
        dense = layer.attention.output.dense if what == "heads" else layer.output.dense
        seen = []
        h = dense.register_forward_hook(lambda mod, a, out: seen.append(out))
        with torch.no_grad():
            for b, _ in batches:
                m(**b)
        h.remove()
        return torch.cat([o[b["attention_mask"].bool()] for o, (b, _) in zip(seen, batches)])

    ref = outputs(model)
    fractions = {"heads_fraction": 0.5} if what == "heads" else {"ffn_fraction": 0.5}
    settings = {"plain": {}, "compensate": {"compensate": True}, "reconstruct": {"reconstruct": True}}
    errors = {}
    for name, extra in settings.items():
        cfg = StructuredPruneConfig(recovery=False, **fractions, **extra)
        pruned, info = structured_prune(copy.deepcopy(model), cfg, batches)
        errors[name] = ((outputs(pruned) - ref) ** 2).mean().item()
        if what == "heads":
            assert "0" in info["pruned_heads"]  # layer 0 did lose heads: the comparison means something
    assert errors["reconstruct"] < 0.9 * errors["plain"], errors
    if what == "ffn":
        assert errors["compensate"] < 0.9 * errors["plain"], errors
        assert errors["reconstruct"] <= errors["compensate"] + 1e-9, errors


def test_reconstruction_refit_is_exact_when_nothing_is_removed():
    """With every input kept and almost no damping the refit returns the layer's own weights."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    x = torch.randn(200, 6, dtype=torch.float64)
    x1 = torch.cat([x, torch.ones(200, 1, dtype=x.dtype)], 1)
    before = (lin.weight.clone(), lin.bias.clone())
    refit(lin, x1.T @ x1, torch.arange(6), 1e-9)
    torch.testing.assert_close(lin.weight, before[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lin.bias, before[1], atol=1e-5, rtol=1e-4)


def test_each_gradual_selection_contains_the_one_before():
    torch.manual_seed(0)
    cfg = StructuredPruneConfig(heads_fraction=0.5, ffn_fraction=0.5, schedule="gradual", events=2)
    heads1, keep1 = select_units(torch.rand(2, 4), [torch.rand(512), torch.rand(512)], cfg, 0.5)
    # new scores rank the earlier survivors first: without the carried selection these would be revived
    rev_heads = torch.ones(2, 4)
    for layer, hs in heads1.items():
        rev_heads[layer, hs] = 10.0
    rev_ffn = [torch.ones(512) * 10 for _ in range(2)]
    for s, k in zip(rev_ffn, keep1):
        s[k] = 0.0
    heads2, keep2 = select_units(rev_heads, rev_ffn, cfg, 1.0, heads1, keep1)
    assert sum(map(len, heads1.values())) == 2 and sum(map(len, heads2.values())) == 4
    assert all(set(hs) <= set(heads2.get(layer, [])) for layer, hs in heads1.items())
    assert [len(k) for k in keep1] == [384, 384] and [len(k) for k in keep2] == [256, 256]
    assert all(set(k2.tolist()) <= set(k1.tolist()) for k1, k2 in zip(keep1, keep2))


def test_gradual_structured_pruning_removes_exactly_what_training_held_at_zero(model, tiny_model, data):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = StructuredPruneConfig(heads_fraction=0.5, ffn_fraction=0.5, schedule="gradual", events=3, ramp=0.5)
    batches = importance_batches(tok, data["train"], 6, 8, 32, 0)
    trained, events = {}, []
    inner = _trainer(model, tok, data, steps=12)

    def train(on_step, after_step):
        def spy(step, total):
            before = sum(int((encoder_layers(model)[i].intermediate.dense.weight.abs().sum(1) == 0).sum()) for i in range(2))
            on_step(step, total)
            after = sum(int((encoder_layers(model)[i].intermediate.dense.weight.abs().sum(1) == 0).sum()) for i in range(2))
            if after != before:
                events.append((step, after))
        inner(spy, after_step)
        trained["model"] = copy.deepcopy(model)  # full shapes, removed units held at zero

    pruned, info = structured_prune(model, cfg, batches, train)
    # three removals at steps 0, 2, 4 (ramp: the first half of 12 steps), each a third more of the FFN target
    assert [s for s, _ in events] == [0, 2, 4] and [n for _, n in events] == [170, 342, 512]
    assert pruned.config.intermediate_size == 256 and sum(map(len, info["pruned_heads"].values())) == 4
    batch = tok(["the acting was superb", "a dull and boring plot twist"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(pruned(**batch).logits, trained["model"](**batch).logits, atol=1e-5, rtol=1e-5)


def test_select_heads_never_empties_a_layer():
    imp = torch.tensor([[0.0, 0.1, 0.2, 0.3], [5.0, 6.0, 7.0, 8.0]])
    chosen = select_heads(imp, 0.75)  # 6 of 8 heads
    assert sum(map(len, chosen.values())) == 6
    assert all(len(h) <= 3 for h in chosen.values())


def test_structured_variant_graph_is_smaller_and_faster_shape(built, tmp_path, tiny_model, tiny_data):
    from compression.build import build
    import onnx

    d = tiny_recipe_dict(tiny_model, tiny_data, **{
        "heads-ffn": [{"prune_structured": {"heads_fraction": 0.5, "ffn_fraction": 0.5, "importance_batches": 2,
                                            "max_steps": 5, "batch_size": 8}}]})
    summary = build(Recipe.from_dict(d), tmp_path)
    row = next(r for r in summary["rows"] if r["variant"] == "heads-ffn")
    assert row["encoder_params_before"] / row["encoder_params"] >= 1.9
    _, out, _ = built
    assert (tmp_path / "heads-ffn" / "model.onnx").stat().st_size < 0.65 * (out / "fp32" / "model.onnx").stat().st_size
    assert onnx.load(str(tmp_path / "heads-ffn" / "model.onnx")).graph.node


@pytest.mark.parametrize("variants, message", [
    ({"x": [{"prune": {"amount": 1.0}}]}, "amount must be in [0, 1)"),
    ({"x": [{"prune_structured": {"heads": {0: [0, 1, 2, 3]}}}]}, "pruning every head of layer 0"),
    ({"x": [{"distill": {"num_layers": 3}}]}, "deeper than the teacher's 2 layers"),
    ({"x": [{"prune": {"schedule": "cubic", "recovery": False}}]}, "needs recovery"),
    ({"x": [{"prune_structured": {"heads_fraction": 0.5, "schedule": "gradual", "recovery": False}}]}, "needs recovery: true"),
    ({"x": [{"prune_structured": {"heads": {0: [0]}, "schedule": "gradual"}}]}, "set heads_fraction, not heads"),
    ({"x": [{"prune_structured": {"heads_fraction": 0.5, "schedule": "slow"}}]}, "schedule must be oneshot or gradual"),
    ({"x": [{"prune_structured": {"heads_fraction": 0.5, "schedule": "gradual", "compensate": True}}]}, "compensate and reconstruct work with the oneshot"),
    ({"x": [{"prune_structured": {"heads_fraction": 0.5, "schedule": "gradual", "reconstruct": True}}]}, "compensate and reconstruct work with the oneshot"),
    ({"x": [{"prune_structured": {"heads_fraction": 0.5, "compensate": True, "reconstruct": True}}]}, "set compensate or reconstruct, not both"),
    ({"x": [{"prune_structured": {"heads_fraction": 0.5, "reconstruct": True, "reconstruct_damp": 0}}]}, "reconstruct_damp must be > 0"),
    ({"x": [{"prune_structured": {"ffn_fraction": 0.5, "schedule": "gradual", "ffn_ranking": "global"}}]},
     "ffn_ranking: global works with the oneshot"),
    ({"x": [{"prune_structured": {"ffn_fraction": 0.5, "ffn_ranking": "everywhere"}}]}, "ffn_ranking must be layer or global"),
])
def test_bad_pruning_recipes_fail_before_work(variants, message, tiny_model, tiny_data, tmp_path):
    with pytest.raises(RecipeError) as exc:
        recipe = Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data, **variants))
        preflight(recipe, tmp_path / "out")
    assert message in str(exc.value)


def test_normalize_heads_ranks_heads_within_their_layers_scale():
    """normalize_heads: a layer whose raw Taylor scores are all 10x larger no longer keeps every head
    while the other layer loses its own; after the per-layer L2 norm the same relative scores give
    each layer the same removals. Off (the default), the ranking is the raw global one."""
    imp = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    raw, _ = select_units(imp, [torch.rand(8)] * 2, StructuredPruneConfig(heads_fraction=0.25))
    assert raw == {0: [0, 1]}
    normed, _ = select_units(imp, [torch.rand(8)] * 2, StructuredPruneConfig(heads_fraction=0.25, normalize_heads=True))
    assert normed == {0: [0], 1: [0]}


def test_global_ffn_ranking_removes_the_least_important_neurons_wherever_they_are():
    """ffn_ranking: global removes ffn_fraction of all neurons by one ranking: the layer with the larger
    scores keeps more, each layer keeps at least its best neuron; the default keeps every layer's width equal."""
    imp = [torch.tensor([5.0, 6.0, 7.0, 8.0]), torch.tensor([0.1, 0.4, 0.2, 0.3])]
    _, keep = select_units(torch.ones(2, 4), imp, StructuredPruneConfig(ffn_fraction=0.5, ffn_ranking="global"))
    assert [k.tolist() for k in keep] == [[1, 2, 3], [1]]
    _, uniform = select_units(torch.ones(2, 4), imp, StructuredPruneConfig(ffn_fraction=0.5))
    assert [k.tolist() for k in uniform] == [[2, 3], [1, 3]]


def test_per_layer_ffn_widths_reload_and_follow_their_layers_into_a_student(model, tiny_model, tmp_path):
    """A globally ranked FFN leaves layers of different widths: the config records them, load_classifier
    rebuilds those shapes (transformers alone would refuse the weights) with the same logits, and a
    student made of some of the layers keeps each layer's width and pruned heads under its new index."""
    from compression.modeling import load_classifier
    from compression.steps.distill import make_student

    imp = [torch.linspace(1.0, 2.0, 512), torch.linspace(0.0, 0.5, 512)]  # layer 1 matters less: it loses more
    heads, keep = select_units(torch.ones(2, 4), imp, StructuredPruneConfig(heads_fraction=0.0, ffn_fraction=0.5,
                                                                          ffn_ranking="global"))
    sizes = [len(k) for k in keep]
    assert sizes[0] > sizes[1] >= 1 and sum(sizes) == 512
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(["the acting was superb", "a dull and boring plot twist"], padding=True, return_tensors="pt")
    # pruned again by the per-layer ranking: each layer keeps half of its own width, and the record follows
    again, _ = structured_prune(prune_heads_ffn(copy.deepcopy(model), {}, keep).requires_grad_(True),
                                StructuredPruneConfig(ffn_fraction=0.5), [(batch, torch.tensor([1, 0]))])
    assert again.config.intermediate_sizes == [max(1, round(n / 2)) for n in sizes]
    pruned = prune_heads_ffn(model, {1: [0, 2]}, keep)
    assert pruned.config.intermediate_sizes == sizes
    pruned.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, _ = load_classifier(str(tmp_path / "m"))
    assert [layer.intermediate.dense.out_features for layer in encoder_layers(loaded)] == sizes
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, pruned(**batch).logits)
    equal = prune_heads_ffn(copy.deepcopy(pruned), {}, [torch.arange(sizes[1])] * 2)
    assert not hasattr(equal.config, "intermediate_sizes")  # equal widths again: no stale per-layer record
    student = make_student(pruned, (1,))
    assert student.config.intermediate_sizes == [sizes[1]] and student.config.pruned_heads == {0: [0, 2]}
    student.save_pretrained(tmp_path / "s")
    tok.save_pretrained(tmp_path / "s")
    reloaded, _ = load_classifier(str(tmp_path / "s"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, student(**batch).logits)


def test_pruning_heads_again_removes_the_heads_ranked_by_their_current_index(model, tiny_model, tmp_path):
    """A model whose heads were pruned before (unevenly) can be pruned again: the ranking sees each
    layer's own head count, and the heads removed are the ones chosen by current index (transformers
    speaks the original ones): the result equals the model with those heads zeroed, and reloads."""
    from compression.modeling import load_classifier
    from compression.steps.prune import original_heads

    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(["the acting was superb", "a dull and boring plot twist"], padding=True, return_tensors="pt")
    prune_heads_ffn(model, {0: [1], 1: [0, 2]}, None)  # 4 heads each: layer 0 keeps 0, 2, 3; layer 1 keeps 1, 3
    imp, _ = taylor_importance(copy.deepcopy(model).requires_grad_(True), [(batch, torch.tensor([1, 0]))])
    assert imp.shape == (2, 3) and torch.isfinite(imp[0]).all() and torch.isfinite(imp[1, :2]).all()
    assert torch.isinf(imp[1, 2])                                   # a head layer 1 no longer has
    every = select_heads(imp, 1.0)                                  # as many as may go: a living head stays in each layer
    assert [len(every.get(i, [])) for i in range(2)] == [2, 1] and all(h < (3, 2)[i] for i, hs in every.items() for h in hs)
    heads = {0: [0], 1: [1]}                                        # current indices: originals 0 and 3
    assert original_heads(model.config, heads) == {0: [0], 1: [3]}
    reference = copy.deepcopy(model)
    with torch.no_grad():
        zero_units(reference, heads, None)
        pruned = prune_heads_ffn(model, heads, None)
        torch.testing.assert_close(pruned(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=1e-5)
    assert {k: sorted(v) for k, v in pruned.config.pruned_heads.items()} == {0: [0, 1], 1: [0, 2, 3]}
    assert [layer.attention.self.num_attention_heads for layer in encoder_layers(pruned)] == [2, 1]
    pruned.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, _ = load_classifier(str(tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, pruned(**batch).logits)
    # the whole step on it, both rankings: every layer keeps a head
    for norm in (False, True):
        again, _ = structured_prune(copy.deepcopy(model).requires_grad_(True),
                                    StructuredPruneConfig(heads_fraction=0.5, normalize_heads=norm), [(batch, torch.tensor([1, 0]))])
        assert [layer.attention.self.num_attention_heads for layer in encoder_layers(again)] == [1, 1]


def test_explicit_heads_are_checked_against_the_model_the_chain_hands_over(model, tiny_model):
    """Explicit heads speak current indices; after an earlier pruning or a distill, a list that names a
    head or layer the model no longer has, or empties a layer, is a one-line RecipeError and nothing is
    removed (the base model's preflight cannot see it)."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = [(tok(["the acting was superb", "a dull plot"], padding=True, return_tensors="pt"), torch.tensor([1, 0]))]
    pruned = prune_heads_ffn(copy.deepcopy(model), {0: [1], 1: [0, 2]}, None)  # 4 heads each -> 3 and 2 left
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    for heads, says in (({1: [2]}, "layer 1 has 2 heads at this step"),
                        ({0: [0, 1, 2]}, "would disconnect it: it has 3 heads"),
                        ({1: [0, 1]}, "would disconnect it: it has 2 heads")):
        cfg = StructuredPruneConfig(heads=heads, recovery=False)
        with pytest.raises(RecipeError, match=says) as err:
            structured_prune(pruned, cfg, batch)
        assert "\n" not in str(err.value)
        assert all(torch.equal(v, before[k]) for k, v in pruned.state_dict().items())
    shallow = copy.deepcopy(model)
    encoder_layers(shallow).__delitem__(1)  # as a distill to one layer leaves it
    shallow.config.num_hidden_layers = 1
    with pytest.raises(RecipeError, match="outside 1 layers"):
        structured_prune(shallow, StructuredPruneConfig(heads={1: [0]}, recovery=False), batch)
    # the same list is fine where the heads exist: current head 1 of layer 1 (original 3) goes
    done, notes = structured_prune(pruned, StructuredPruneConfig(heads={1: [1]}, recovery=False), batch)
    assert [layer.attention.self.num_attention_heads for layer in encoder_layers(done)] == [3, 1]
    assert notes["pruned_heads"] == {"1": [3]}


def test_a_globally_ranked_ffn_builds_and_serves_in_every_format(built, tmp_path, tiny_model, tiny_data):
    """Layers of different FFN widths through the build: a PyTorch row, a PyTorch-int8 row and an ONNX int8
    row, each reopened from its folder (as the app does) and scoring what the build measured."""
    import shutil

    from compression import artifacts
    from compression.build import build
    from compression.loader import load_runner
    from compression.data import load_splits

    prune = {"prune_structured": {"heads_fraction": 0.25, "ffn_fraction": 0.5, "ffn_ranking": "global",
                                  "importance_batches": 2, "max_steps": 3, "batch_size": 8}}
    d = tiny_recipe_dict(tiny_model, tiny_data, torch=[prune], **{"torch-int8": [prune, "torch_dynamic_int8"]},
                         onnx=[prune, "export", "quantize_dynamic"])
    shutil.copytree(built[1] / artifacts.TEACHER, tmp_path / artifacts.TEACHER)  # same teacher: reused, not retrained
    summary = build(Recipe.from_dict(d), tmp_path)
    rows = {r["variant"]: r for r in summary["rows"]}
    splits = load_splits(DatasetConfig(path=str(tiny_data), max_length=32))
    for name in ("torch", "torch-int8", "onnx"):
        runner = load_runner(tmp_path / name, 1, 32)
        pred = runner.served_logits(splits["eval"].texts).argmax(-1)
        acc = sum(int(p) == y for p, y in zip(pred, splits["eval"].labels)) / len(splits["eval"])
        assert acc == pytest.approx(rows[name]["accuracy"]), name
    sizes = json.loads((tmp_path / "torch" / "config.json").read_text())["intermediate_sizes"]
    assert len(set(sizes)) > 1 and sum(sizes) == 512  # 2 layers x 512, half of them removed
