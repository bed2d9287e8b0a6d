"""Recipes: round-trip exactly, and bad ones fail before any work with a clear message."""
import json

import pytest

from compression.errors import RecipeError
from compression.recipe import Recipe, load_recipe, save_recipe
from conftest import REPO, tiny_recipe_dict


@pytest.mark.parametrize("name", ["demo.yaml", "sst2.yaml"])
def test_shipped_recipes_round_trip(name, tmp_path):
    recipe = load_recipe(REPO / "recipes" / name)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    for suffix in (".yaml", ".json"):
        save_recipe(recipe, tmp_path / f"r{suffix}")
        again = load_recipe(tmp_path / f"r{suffix}")
        assert again == recipe and again.to_dict() == recipe.to_dict()


def test_fingerprint_tracks_steps_and_teacher(tiny_model, tiny_data):
    d = tiny_recipe_dict(tiny_model, tiny_data)
    a = Recipe.from_dict(d)
    d["variants"]["int8-dynamic"] = ["export", {"quantize_dynamic": {"per_channel": False}}]
    b = Recipe.from_dict(d)
    assert a.variant("fp32").fingerprint(a) == b.variant("fp32").fingerprint(b)
    assert a.variant("int8-dynamic").fingerprint(a) != b.variant("int8-dynamic").fingerprint(b)
    d["teacher"]["epochs"] = 1
    c = Recipe.from_dict(d)
    assert c.variant("fp32").fingerprint(c) != a.variant("fp32").fingerprint(a)


@pytest.mark.parametrize("step, fields", [
    ({"distill": {"num_layers": 1, "max_steps": 4}},
     (("min_words", 5), ("augment", 1), ("kd_loss", "mse"), ("freeze_layers", 1), ("ema", 0.99))),
    ({"prune_structured": {"heads_fraction": 0.25, "max_steps": 4}},
     (("normalize_heads", True), ("ffn_ranking", "global"), ("ema", 0.99), ("reconstruct", True))),
])
def test_a_later_field_at_its_old_behaviour_keeps_the_fingerprint(tiny_model, tiny_data, step, fields):
    """The fields of LATER_FIELDS (KD: min_words, the augment fields, kd_loss, freeze_layers, ema; structured pruning:
    normalize_heads, ffn_ranking, reconstruct; the teacher's head_learning_rate, layer_lr_decay) came after folders were built: at their old behaviour a row keeps the fingerprint
    it had before they existed (no rebuild); any other value is a different model."""
    import dataclasses
    import hashlib

    from compression.config import LATER_FIELDS, plain

    a = Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data, student=[step]))
    spec = a.variant("student")
    before = {  # the payload as fingerprint() wrote it before those fields existed
        "base_model": a.base_model,
        "dataset": {k: v for k, v in plain(dataclasses.asdict(a.dataset)).items() if k not in ("name", "hub_id", "hub_config", "task", "tags")},
        "teacher": {k: v for k, v in plain(dataclasses.asdict(a.teacher)).items() if k not in ("head_learning_rate", "layer_lr_decay")},
        "steps": [{n: {k: v for k, v in c.items() if k not in LATER_FIELDS and k not in dict(fields)} for n, c in s.to_obj().items()}
                  for s in spec.steps],
    }
    assert spec.fingerprint(a) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    (name, cfg), = step.items()
    for field, value in fields:
        b = Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data, student=[{name: {**cfg, field: value}}]))
        assert b.variant("student").fingerprint(b) != spec.fingerprint(a), field
    for field, value in (("head_learning_rate", 1e-3), ("layer_lr_decay", 0.8)):  # the teacher's later fields
        d = tiny_recipe_dict(tiny_model, tiny_data, student=[step])
        d.setdefault("teacher", {})[field] = value
        b = Recipe.from_dict(d)
        assert b.variant("student").fingerprint(b) != spec.fingerprint(a), field


@pytest.mark.parametrize(
    "variants, message",
    [
        ({"x": ["exprot"]}, "unknown step 'exprot'"),
        ({"x": [{"quantize_dynamic": {"preset": "avx9000"}}]}, "preset must be one of"),
        ({"x": [{"quantize_dynamic": {"per_chanel": True}}]}, "unknown option(s) ['per_chanel']"),
        ({"x": [{"quantize_static": {"method": "magic"}}]}, "method must be"),
        ({"x": ["torch_dynamic_int8", "export"]}, "must be last"),
        ({"x": []}, "non-empty list of steps"),
        ({"teacher": ["export"]}, "reserved"),
        ({"bad name!": ["export"]}, "letters, digits"),
        ({"x": [{"fp16": {}, "export": {}}]}, "one-key mapping"),
    ],
)
def test_bad_variants_fail_early(variants, message, tiny_model, tiny_data):
    d = tiny_recipe_dict(tiny_model, tiny_data, **variants)
    with pytest.raises(RecipeError) as exc:
        Recipe.from_dict(d)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"version": 99}, "version 99 is not supported"),
        ({"teachr": {}}, "unknown section(s) ['teachr']"),
        ({"teacher": {"learning_rate": 5}}, "learning_rate must be in (0, 1)"),
        ({"dataset": {"train_samples": 0}}, "train_samples must be a positive integer"),
        ({"variants": {}}, "non-empty mapping"),
        ({"evaluation": {"latency_rounds": 0}}, "latency_rounds must be >= 1"),
        ({"evaluation": {"recommend_criterion": "percent"}}, "recommend_criterion must be one of absolute, relative"),
        ({"evaluation": {"recommend_tolerance": 1}}, "recommend_tolerance must be in [0, 1)"),
    ],
)
def test_bad_sections_fail_early(patch, message, tiny_model, tiny_data):
    d = tiny_recipe_dict(tiny_model, tiny_data)
    d.update(patch)
    with pytest.raises(RecipeError) as exc:
        Recipe.from_dict(d)
    assert message in str(exc.value)


def test_unparseable_and_missing_recipe_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(RecipeError, match="not valid JSON"):
        load_recipe(bad_json)


def test_compression_config_reloads_identically(built):
    recipe, out, _ = built
    for name in ("int8-dynamic", "int8-static", "fp16"):
        cc = json.loads((out / name / "compression_config.json").read_text())
        assert cc["format_version"] == 2 and cc["variant"] == name
        again = Recipe.from_dict(cc["recipe"])
        assert again == recipe
        assert again.variant(name).fingerprint(again) == cc["fingerprint"]
        assert {"torch", "transformers", "onnxruntime", "optimum-onnx"} <= set(cc["versions"])
