"""KD data augmentation: embedding neighbours, teacher-labelled variants, and the KD run that uses them."""
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compression.data import TextData, read_file
from compression.steps.augment import IGNORE, augment_texts, neighbour_table, whole_words
from compression.steps.losses import distill_loss, kd_loss


def test_neighbours_are_the_nearest_whole_words_by_cosine_and_never_the_word_itself():
    vocab = {"[CLS]": 0, "good": 1, "great": 2, "bad": 3, "##ing": 4, "film": 5, "9": 6}
    emb = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.9, 0.1], [0.2, 1.0], [1.0, 0.01], [0.0, 1.0], [1.0, 0.0]])
    assert whole_words(vocab) == ["bad", "film", "good", "great"]   # no specials, continuations, digits
    table = neighbour_table(emb, vocab, ["good", "film", "unknown", "##ing"], k=2)
    assert set(table) == {"good", "film"}
    assert table["good"] == ["great", "bad"]                          # 'good' itself and '##ing' (cosine 1.0) excluded
    assert table["film"] == ["bad", "great"]
    # scale does not matter (cosine), and k is capped by the candidates left
    assert neighbour_table(emb * 7, vocab, ["good"], k=50)["good"] == ["great", "bad", "film"]


def test_variants_swap_words_for_neighbours_deterministically_at_least_one_each():
    table = {"good": ["great"], "film": ["movie"], "dull": ["boring"]}
    texts = ["a good film", "so dull", "nothing to swap here"]
    out = augment_texts(texts, table, copies=3, share=0.3, seed=0)
    assert len(out) == 9
    assert out == augment_texts(texts, table, copies=3, share=0.3, seed=0)           # same seed, same variants
    for c in range(3):
        assert out[c * 3 + 1] == "so boring"                                           # the only swappable word, always
        assert out[c * 3 + 2] == "nothing to swap here"                                 # nothing swappable: unchanged
        first = out[c * 3].split()
        assert first[0] == "a" and first[1] in ("good", "great") and first[2] in ("film", "movie")
        assert first[1:] != ["good", "film"]                                            # at least one swap
    assert augment_texts(texts, table, copies=1, share=1.0, seed=5)[0] == "a great movie"  # share 1: every word
    assert augment_texts(["A GOOD film"], table, 1, 1.0, 0) == ["A great movie"]         # looked up lower-cased too
    assert augment_texts(texts, table, copies=0, share=0.3, seed=0) == []
    with pytest.raises(ValueError):
        augment_texts(texts, table, copies=1, share=0.0, seed=0)


def test_augmented_rows_are_learnt_from_the_teacher_only():
    s = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]])
    t = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    gold = torch.tensor([0, 1, 1])
    mixed = torch.tensor([0, IGNORE, IGNORE])
    # only the first row has a gold label: CE is that row's, KD is every row's
    ce0 = torch.nn.functional.cross_entropy(s[:1], gold[:1])
    assert distill_loss(s, t, mixed, 0.7, 2.0).item() == pytest.approx(0.7 * kd_loss(s, t, 2.0).item() + 0.3 * ce0.item(), rel=1e-5)
    # a batch of only augmented rows is KD alone (not NaN)
    alone = distill_loss(s, t, torch.full((3,), IGNORE), 0.7, 2.0)
    assert alone.item() == pytest.approx(0.7 * kd_loss(s, t, 2.0).item(), rel=1e-5)
    # with every label present it is the mean CE it always was
    full = 0.7 * kd_loss(s, t, 2.0) + 0.3 * torch.nn.functional.cross_entropy(s, gold)
    assert distill_loss(s, t, gold, 0.7, 2.0).item() == pytest.approx(full.item(), rel=1e-6)


def test_kd_with_augment_trains_on_the_subset_and_its_teacher_labelled_variants(tiny_model, tiny_data, tmp_path):
    from conftest import tiny_recipe_dict

    from compression.build import BuildContext, ChainState
    from compression.recipe import Recipe
    from compression.steps.distill import make_student
    from compression.steps.training import TrainConfig, kd_finetune, sentence_passes

    recipe = Recipe.from_dict(tiny_recipe_dict(tiny_model, tiny_data))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    rows = read_file(tiny_data / "train.tsv", "sentence", "label")
    ctx = BuildContext(recipe, tmp_path, {"train": rows}, teacher, tok)
    steps = []
    ctx.train_step = lambda done, total: steps.append(total)
    cfg = TrainConfig(epochs=1, batch_size=10, train_samples=50, augment=2)
    state = ChainState(make_student(teacher, (1,)), tok)
    kd_finetune(state, cfg, ctx)
    assert set(steps) == {15}                                # (50 + 2 x 50) / 10: the variants are trained on
    assert sentence_passes(cfg, len(rows)) == 150            # and the build's estimate counts them
    key = next(k for k in ctx.splits if k.startswith("train+aug/"))
    variants = ctx.splits[key]
    assert len(variants) == 100 and set(variants.labels) == {IGNORE}
    originals = set(rows.texts)
    assert sum(t not in originals for t in variants.texts) > 50  # words really were swapped
    logits = ctx.teacher_train_logits(None, key)             # labelled by the teacher, cached for sibling students
    assert logits.shape == (100, 2) and not torch.isnan(logits).any()
    with torch.no_grad():
        direct = teacher(**tok(variants.texts[:4], padding=True, return_tensors="pt")).logits
    assert torch.allclose(logits[:4], direct, atol=1e-4)
    # augment 0 trains on the subset alone, as before the field existed
    steps.clear()
    kd_finetune(ChainState(make_student(teacher, (1,)), tok), TrainConfig(epochs=1, batch_size=10, train_samples=50), ctx)
    assert set(steps) == {5}


def test_bad_augment_settings_are_refused():
    from compression.steps.training import TrainConfig

    for bad in ({"augment": -1}, {"augment_words": 0}, {"augment_words": 1.5}, {"augment_neighbours": 0}):
        with pytest.raises(ValueError, match="augment"):
            TrainConfig(**bad)


def test_variants_of_real_sentences_read_like_sentences(tiny_model):
    """On the tiny model's vocabulary: only vocabulary words come in, the sentence length is kept."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    data = TextData(["the film is good", "the plot was dull and weak"], [1, 0])
    table = neighbour_table(model.get_input_embeddings().weight, tok.get_vocab(), {w for t in data.texts for w in t.split()}, 3)
    for text, new in zip(data.texts * 4, augment_texts(data.texts, table, 4, 0.5, 1)):
        assert len(new.split()) == len(text.split()) and new != text
        assert all(w in tok.get_vocab() for w in new.split())
