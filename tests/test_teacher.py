"""Teacher fine-tuning knobs on the tiny model: what is frozen stays exactly as loaded."""
import pytest
import torch

from compression.config import DatasetConfig, TeacherConfig
from compression.data import TextData
from compression.errors import RecipeError
from compression.modeling import load_classifier
from compression.teacher import train_teacher
from conftest import synthetic


def _data():
    rows = synthetic(64, 5)
    return TextData([t for t, _ in rows], [y for _, y in rows])


def test_freeze_layers_keeps_embeddings_and_lowest_blocks_fixed(tiny_model, tmp_path):
    before, _ = load_classifier(str(tiny_model))
    cfg = TeacherConfig(max_steps=4, epochs=1, batch_size=16, learning_rate=1e-3, freeze_layers=1)
    model, _ = train_teacher(str(tiny_model), _data(), DatasetConfig(label_names=("negative", "positive")), cfg, tmp_path)
    old, new = dict(before.named_parameters()), dict(model.named_parameters())
    for name in new:
        same = torch.equal(old[name], new[name])
        if name.startswith(("bert.embeddings.", "bert.encoder.layer.0.")):
            assert same, f"{name} is frozen but changed"
        elif name.startswith("bert.encoder.layer.1.") and name.endswith("weight"):
            assert not same, f"{name} should have trained"
    # frozen only while the teacher trains: pruning's importance scores and students need gradients
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_layers_must_leave_a_block_to_train(tiny_model, tmp_path):
    cfg = TeacherConfig(max_steps=1, epochs=1, freeze_layers=2)  # the tiny model has 2 layers
    with pytest.raises(RecipeError, match="only 2 layers"):
        train_teacher(str(tiny_model), _data(), DatasetConfig(label_names=("negative", "positive")), cfg, tmp_path)
    with pytest.raises(ValueError, match="freeze_layers must be >= 0"):
        TeacherConfig(freeze_layers=-1)


def test_head_learning_rate_moves_the_new_head_not_the_encoder(tiny_model, tmp_path):
    """head_learning_rate: the classifier and pooler train at their own rate, the encoder at learning_rate."""
    before, _ = load_classifier(str(tiny_model))
    old = {n: p.detach().clone() for n, p in before.named_parameters()}

    def moved(cfg):
        model, _ = train_teacher(str(tiny_model), _data(), DatasetConfig(label_names=("negative", "positive")), cfg, tmp_path)
        return {n: float((p.detach() - old[n]).abs().max()) for n, p in model.named_parameters()}

    base = dict(max_steps=4, epochs=1, batch_size=16, learning_rate=1e-7, warmup_ratio=0.0, weight_decay=0.0)
    one_rate, two_rates = moved(TeacherConfig(**base)), moved(TeacherConfig(**base, head_learning_rate=1e-2))
    for name in ("classifier.weight", "bert.pooler.dense.weight"):
        assert two_rates[name] > 1e-3 and one_rate[name] < 1e-5, name
    body = [n for n in two_rates if n.startswith("bert.encoder.") and n.endswith("weight")]
    assert body and max(two_rates[n] for n in body) < 1e-5
    with pytest.raises(ValueError, match="head_learning_rate must be in"):
        TeacherConfig(head_learning_rate=2.0)


def test_layer_lr_decay_slows_the_lower_blocks(tiny_model, tmp_path):
    """layer_lr_decay: the top block learns at learning_rate, each block below at decay x the one above."""
    from compression.teacher import layer_rate_factor

    assert layer_rate_factor("bert.encoder.layer.5.attention.self.query.weight", 6, 0.5) == 1.0
    assert layer_rate_factor("bert.encoder.layer.0.output.dense.bias", 6, 0.5) == 0.5 ** 5
    assert layer_rate_factor("bert.embeddings.LayerNorm.weight", 6, 0.5) == 0.5 ** 6
    assert layer_rate_factor("classifier.weight", 6, 0.5) == 1.0
    before, _ = load_classifier(str(tiny_model))
    old = {n: p.detach().clone() for n, p in before.named_parameters()}
    base = dict(max_steps=4, epochs=1, batch_size=16, learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.0)
    model, _ = train_teacher(str(tiny_model), _data(), DatasetConfig(label_names=("negative", "positive")),
                             TeacherConfig(**base, layer_lr_decay=1e-4), tmp_path)
    moved = {n: float((p.detach() - old[n]).abs().max()) for n, p in model.named_parameters()}
    top = [moved[n] for n in moved if n.startswith("bert.encoder.layer.1.") and n.endswith("weight")]
    low = [moved[n] for n in moved if n.startswith("bert.encoder.layer.0.") and n.endswith("weight")]
    assert min(top) > 1e-3 and max(low) < 1e-4  # Adam moves a weight by about its rate per step: 1e-2 vs 1e-6
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="layer_lr_decay must be in"):
            TeacherConfig(layer_lr_decay=bad)
