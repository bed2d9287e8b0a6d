"""KD losses against hand-computed values; students initialised from teacher layers."""
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compression.modeling import encoder_layers
from compression.steps.distill import make_student, spread_layers
from compression.steps.losses import distill_loss, hidden_mse, kd_loss, logit_mse


def test_kd_loss_hand_computed():
    s = torch.tensor([[1.0, 2.0]])
    t = torch.tensor([[3.0, 0.0]])
    T = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + math.exp(1.0)), math.exp(1.0) / (math.exp(0.5) + math.exp(1.0))]
    pt = [math.exp(1.5) / (math.exp(1.5) + 1), 1 / (math.exp(1.5) + 1)]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert math.isclose(kd_loss(s, t, T).item(), kl * T * T, rel_tol=1e-5)
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_distill_loss_mixes_kd_and_ce():
    s, t, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([0])
    ce = -math.log(math.exp(1) / (math.exp(1) + math.exp(2)))
    expected = 0.7 * kd_loss(s, t, 2.0).item() + 0.3 * ce
    assert math.isclose(distill_loss(s, t, y, alpha=0.7, temperature=2.0).item(), expected, rel_tol=1e-5)


def test_logit_mse_loss_hand_computed_and_chosen_by_kind():
    s, t, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([0])
    assert logit_mse(s, t).item() == pytest.approx(((1 - 3) ** 2 + (2 - 0) ** 2) / 2)
    assert logit_mse(t, t).item() == 0.0
    ce = -math.log(math.exp(1) / (math.exp(1) + math.exp(2)))
    assert distill_loss(s, t, y, 0.7, 2.0, "mse").item() == pytest.approx(0.7 * 4.0 + 0.3 * ce, rel=1e-5)
    # KL sees only the softmax: shifting both student logits changes nothing; MSE copies the logits themselves
    assert kd_loss(s + 5, t, 2.0).item() == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-5)
    assert logit_mse(s + 5, t).item() != pytest.approx(logit_mse(s, t).item())
    with pytest.raises(ValueError, match="kd_loss must be one of"):
        distill_loss(s, t, y, 0.7, 2.0, "l1")


def test_mse_keeps_pulling_where_the_teacher_is_sure():
    """The reason to offer MSE: a student on the right side of a sure teacher (margin 4 vs 16) gets
    a strong pull toward the teacher's margin from MSE and almost none from KL at T=2."""
    t = torch.tensor([[8.0, -8.0]])
    grads = {}
    for kind in ("kl", "mse"):
        s = torch.tensor([[2.0, -2.0]], requires_grad=True)
        distill_loss(s, t, torch.tensor([0]), 1.0, 2.0, kind).backward()
        grads[kind] = s.grad[0, 0].item()
    assert grads["kl"] < 0 and grads["mse"] < 0           # both raise the positive logit
    assert abs(grads["mse"]) > 10 * abs(grads["kl"])


def test_hidden_mse_masks_padding():
    hs = [torch.zeros(1, 3, 2)]
    ht = [torch.ones(1, 3, 2), torch.full((1, 3, 2), 2.0)]
    mask = torch.tensor([[1, 1, 0]])
    ht[1][0, 2] = 100.0  # padded position must not count
    assert hidden_mse(hs, ht, [1], mask).item() == pytest.approx(4.0)


def test_spread_layers():
    assert spread_layers(6, 3) == (1, 3, 5)
    assert spread_layers(6, 2) == (2, 5)
    assert spread_layers(6, 6) == tuple(range(6))
    with pytest.raises(ValueError):
        spread_layers(6, 7)


def test_student_copies_chosen_teacher_layers(tiny_model):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    student = make_student(teacher, (1,))
    assert len(encoder_layers(student)) == 1 and student.config.num_hidden_layers == 1
    torch.testing.assert_close(encoder_layers(student)[0].attention.self.query.weight,
                               encoder_layers(teacher)[1].attention.self.query.weight)
    assert len(encoder_layers(teacher)) == 2  # teacher untouched


def test_kd_uses_train_samples_and_leaves_thread_settings_alone(tiny_model, tiny_data):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compression.data import read_file
    from compression.runtime import TorchRunner
    from compression.steps.training import TrainConfig, distill

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    student = make_student(teacher, (1,))
    data = read_file(tiny_data / "train.tsv", "sentence", "label")
    steps = []
    cfg = TrainConfig(epochs=1, batch_size=10, train_samples=50)
    out = distill(teacher, student, data, cfg, tok, max_length=32, on_step=lambda s, t: steps.append(t))
    assert len(steps) == 5 and set(steps) == {5}           # ceil(1 epoch x 50 samples / 10)
    assert not out.training and next(out.parameters()).device.type == "cpu"
    torch.set_num_threads(2)
    TorchRunner(teacher, tok, threads=1).logits(["good film"])
    assert torch.get_num_threads() == 2                    # measurement no longer pins the process to one core


def test_train_config_rejects_bad_knobs():
    from compression.steps.training import TrainConfig

    for bad in ({"train_samples": 0}, {"warmup_ratio": 1.0}, {"max_grad_norm": 0}, {"alpha": 2}, {"min_words": -1},
                {"kd_loss": "l1"}, {"label_steps": -1}, {"label_learning_rate": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_min_words_keeps_kd_to_long_phrases_and_changes_nothing_when_zero():
    import random

    from compression.steps.training import TrainConfig, kd_subset

    texts = ["good", "not bad", "a film", "not bad at all", "one of the best films of the year", "dull and long"] * 10
    long = kd_subset(texts, TrainConfig(min_words=3))
    assert long and all(len(texts[i].split()) >= 3 for i in long)
    assert len(long) == 30                                  # every long phrase, none of the short ones
    some = kd_subset(texts, TrainConfig(min_words=3, train_samples=7, seed=1))
    assert len(some) == 7 and set(some) <= set(long) and some == sorted(some)
    # min_words 0 draws exactly the subset the builds drew before the field existed
    assert kd_subset(texts, TrainConfig(train_samples=7, seed=1)) == sorted(random.Random(1).sample(range(60), 7))
    assert kd_subset(texts, TrainConfig()) is None
    with pytest.raises(ValueError, match="min_words=9: no training sentence"):
        kd_subset(texts, TrainConfig(min_words=9))


def test_kd_steps_follow_the_long_phrases_left(tiny_model, tiny_data):
    """The step count (and so the build's ETA) comes from the sentences min_words leaves, not the split's size."""
    from transformers import AutoTokenizer

    from compression.data import TextData, read_file
    from compression.steps.training import TrainConfig, distill, kd_subset

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    rows = read_file(tiny_data / "train.tsv", "sentence", "label")
    # SST-2-like: every third row cut to a two-word sub-phrase
    data = TextData([" ".join(t.split()[:2]) if i % 3 == 0 else t for i, t in enumerate(rows.texts)], rows.labels)
    cfg = TrainConfig(epochs=1, batch_size=10, min_words=4)
    n = len(kd_subset(data.texts, cfg))
    assert 0 < n < len(data)
    steps = []
    distill(teacher, make_student(teacher, (1,)), data, cfg, tok, max_length=32, on_step=lambda s, t: steps.append(t))
    assert len(steps) == math.ceil(n / 10)


def test_hidden_state_kd_pulls_the_students_layers_toward_the_teachers(tiny_model, tiny_data):
    """TinyBERT-style KD with a layer map: the hidden-state MSE it adds goes down as the student trains."""
    from transformers import AutoTokenizer

    from compression.data import read_file
    from compression.steps.training import TrainConfig, distill

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    data = read_file(tiny_data / "train.tsv", "sentence", "label")
    batch = tok(data.texts[:64], padding=True, return_tensors="pt")

    def mse(student):
        with torch.no_grad():
            hs = student(**batch, output_hidden_states=True).hidden_states
            ht = teacher(**batch, output_hidden_states=True).hidden_states
        return hidden_mse(list(hs), list(ht), [0, 2], batch["attention_mask"]).item()

    student = make_student(teacher, (1,))
    torch.nn.init.normal_(encoder_layers(student)[0].output.dense.weight, std=0.2)  # a student far from its teacher layer
    before = mse(student)
    cfg = TrainConfig(max_steps=40, batch_size=16, learning_rate=1e-3, hidden_weight=1.0, alpha=0.5)
    trained = distill(teacher, student, data, cfg, tok, max_length=32, layer_map=[1])
    assert mse(trained) < 0.5 * before


def test_kd_loss_mse_reaches_the_loop_and_pulls_the_logits_to_the_teachers(tiny_model, tiny_data):
    """kd_loss: mse trains the student's raw logits toward the teacher's (the field reaches the loop:
    an unknown kd_loss never gets that far, see test_train_config_rejects_bad_knobs)."""
    from transformers import AutoTokenizer

    from compression.data import read_file
    from compression.steps.training import TrainConfig, distill

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    data = read_file(tiny_data / "train.tsv", "sentence", "label")
    batch = tok(data.texts[:64], padding=True, return_tensors="pt")
    with torch.no_grad():
        target = teacher(**batch).logits

    def gap(student):
        with torch.no_grad():
            return logit_mse(student(**batch).logits, target).item()

    student = make_student(teacher, (1,))
    torch.nn.init.normal_(student.classifier.weight, std=0.5)  # logits far from the teacher's
    before = gap(student)
    cfg = TrainConfig(max_steps=40, batch_size=16, learning_rate=1e-3, alpha=1.0, kd_loss="mse")
    assert gap(distill(teacher, student, data, cfg, tok, max_length=32)) < 0.2 * before


def test_kd_can_learn_from_the_training_rows_the_teacher_never_saw(tiny_model, tiny_data, tmp_path, caplog):
    """transfer: unused — the recipe's train_samples leave rows out; a student's KD runs on exactly those."""
    from compression.build import build
    from compression.data import read_file
    from compression.recipe import Recipe
    from conftest import tiny_recipe_dict

    kd = {"distill": {"num_layers": 1, "max_steps": 4, "batch_size": 16, "transfer": "unused"}}
    d = tiny_recipe_dict(tiny_model, tiny_data, student=[kd])
    d["dataset"]["train_samples"] = 300  # of 400: the teacher sees 300, the student learns from the other 100
    d["teacher"]["epochs"] = 1
    caplog.set_level("INFO", logger="compression")
    build(Recipe.from_dict(d), tmp_path / "out")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher logits on")]
    assert lines == ["teacher logits on 100 unused sentences in " + lines[0].split(" in ")[1]]
    seen, unused = read_file(tiny_data / "train.tsv", "sentence", "label").split(300, 0)
    assert len(seen) == 300 and len(unused) == 100   # the split the build made: the teacher's rows and the rest


def test_kd_freeze_layers_keeps_the_lowest_blocks_and_embeddings_and_trains_the_rest(tiny_model, tiny_data):
    """freeze_layers: the embeddings block and the lowest blocks leave KD bit-identical, the blocks
    above move, and every parameter is trainable again afterwards (a later pruning step ranks with
    gradients); a depth the model does not have is a one-line recipe error."""
    from transformers import AutoTokenizer

    from compression.data import read_file
    from compression.errors import RecipeError
    from compression.steps.training import TrainConfig, distill

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    data = read_file(tiny_data / "train.tsv", "sentence", "label")
    student = make_student(teacher, (0, 1))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    out = distill(teacher, student, data, TrainConfig(max_steps=5, batch_size=16, learning_rate=1e-3, freeze_layers=1),
                  tok, max_length=32)
    after = out.state_dict()
    fixed = [k for k in before if ".embeddings." in k or ".layer.0." in k]
    moved = [k for k in before if ".layer.1." in k and k.endswith("weight")]
    assert fixed and moved
    assert all(torch.equal(before[k], after[k]) for k in fixed)
    assert all(not torch.equal(before[k], after[k]) for k in moved)
    assert all(p.requires_grad for n, p in out.named_parameters() if "word_embeddings" not in n)
    with pytest.raises(RecipeError, match="freeze_layers=2: the model has only 2 layers"):
        distill(teacher, make_student(teacher, (0, 1)), data, TrainConfig(max_steps=1, freeze_layers=2), tok, max_length=32)
    with pytest.raises(ValueError, match="freeze_layers must be >= 0"):
        TrainConfig(freeze_layers=-1)


def test_kd_ema_keeps_the_moving_average_of_the_steps_weights(tiny_model, tiny_data):
    """ema: the student KD returns is the exponential moving average of the weights after each step
    (recomputed here from snapshots), not the last step's; masks (after_step) still run on it."""
    from transformers import AutoTokenizer

    from compression.data import read_file
    from compression.steps.training import TrainConfig, distill

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    data = read_file(tiny_data / "train.tsv", "sentence", "label")
    student = make_student(teacher, (1,))
    name = "classifier.weight"
    start = dict(student.named_parameters())[name].detach().clone()
    snaps = []

    def after(step, total):
        snaps.append(dict(student.named_parameters())[name].detach().clone())

    cfg = TrainConfig(max_steps=6, batch_size=16, learning_rate=1e-2, ema=0.7)
    out = distill(teacher, student, data, cfg, tok, max_length=32, after_step=after)
    assert len(snaps) == 7  # six steps, then once more on the averaged weights
    expected = start
    for w in snaps[:6]:
        expected = 0.7 * expected + 0.3 * w
    got = dict(out.named_parameters())[name].detach()
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, snaps[5], atol=1e-4)  # not the last step's weights
    with pytest.raises(ValueError, match="ema must be in"):
        TrainConfig(ema=1.0)


def test_label_finetune_learns_the_gold_labels_alone(tiny_model, tiny_data):
    """label_finetune: cross-entropy on the gold labels, no teacher: trained on inverted labels, the student
    agrees with the inversion more than before, and the loop ran exactly label_steps steps."""
    from transformers import AutoTokenizer

    from compression.data import TextData, read_file
    from compression.steps.training import TrainConfig, label_finetune

    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    data = read_file(tiny_data / "train.tsv", "sentence", "label")
    flipped = TextData(data.texts, [1 - y for y in data.labels])
    student = make_student(teacher, (1,))

    def agreement(model):
        with torch.no_grad():
            enc = tok(flipped.texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1)
        return float((pred == torch.tensor(flipped.labels)).float().mean())

    before = agreement(student)
    steps = []
    cfg = TrainConfig(label_steps=100, label_learning_rate=1e-3, batch_size=16, learning_rate=1e-9, alpha=1.0)
    out = label_finetune(student, flipped, None, cfg, tok, 32, progress=lambda done, total: steps.append(total))
    assert len(steps) == 100 and set(steps) == {100}
    assert agreement(out) > before + 0.2      # it learnt the labels it was given (alpha 1 and lr 1e-9 of KD ignored)
    assert not out.training


def test_a_build_runs_the_label_finetune_after_kd_on_the_kd_sentences_only(tiny_model, tiny_data, tmp_path, caplog):
    """label_steps in a recipe: after KD (here with teacher-labelled variants), that many steps on the KD
    sentences' gold labels, never on the variants (which have none); counted in the step's declared work."""
    from compression.build import build
    from compression.recipe import Recipe
    from compression.steps.training import TrainConfig, sentence_passes
    from conftest import tiny_recipe_dict

    kd = {"distill": {"num_layers": 1, "max_steps": 4, "batch_size": 16, "train_samples": 60, "augment": 1, "label_steps": 3}}
    d = tiny_recipe_dict(tiny_model, tiny_data, student=[kd])
    caplog.set_level("INFO", logger="compression")
    build(Recipe.from_dict(d), tmp_path / "out")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("label fine-tune")]
    assert lines == ["label fine-tune: 3 steps at lr 2e-05 on 60 labelled sentences"]
    assert sentence_passes(TrainConfig(max_steps=4, label_steps=3, batch_size=16), 100) == 7 * 16
