"""The demo teacher is chosen on held-out training sentences: the dev slice must not leak into the pool."""
import random

import pytest

from compression.data import TextData
from conftest import benchmark_module


def _sweep():
    return benchmark_module("teacher_sweep")


def test_dev_slice_is_whole_sentences_whose_phrases_are_not_trained_on(monkeypatch):
    sweep = _sweep()
    monkeypatch.setattr(sweep, "DEV_SIZE", 5)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    sentences = [" ".join(rng.sample(words, 16)) for _ in range(20)]
    texts, labels = [], []
    for k, s in enumerate(sentences):  # SST-2's shape: each sentence plus its sub-phrases, one row each
        toks = s.split()
        for phrase in [s, " ".join(toks[:8]), " ".join(toks[4:7]), toks[0] + " " + toks[1], toks[3]]:
            texts.append(phrase + " ")
            labels.append(k % 2)
    pool, dev = sweep.dev_split(TextData(texts, labels))
    assert len(dev) == 5 and all(t.strip() in sentences for t in dev.texts)  # whole sentences only
    for t in pool.texts:
        if len(t.split()) >= sweep.MIN_LEAK_WORDS:  # no phrase of 3+ words from inside a dev sentence
            assert not any(f" {t.strip()} " in f" {d.strip()} " for d in dev.texts), t
    assert len(pool) + len(dev) < len(texts) and len(pool) > 0.7 * len(texts)  # only the dev sentences' phrases went


def test_user_noise_keeps_the_sentence_and_adds_only_sentiment_free_tokens():
    """The student sweep's noisy dev slice: each sentence intact, an @mention / link / hashtag around it,
    the same on every call; and the sides-kept measure counts each side of the teacher's answer apart."""
    import torch

    sweep = benchmark_module("student_sweep")
    texts = [f"sentence number {i} was fine " for i in range(200)]
    noisy = sweep.user_noise(texts)
    assert noisy == sweep.user_noise(texts) != texts
    for t, n in zip(texts, noisy):
        assert t.strip() in n
        extra = n.replace(t.strip(), " ").split()
        assert all(w.startswith(("@", "http://t.co/", "#")) for w in extra)
    share = lambda p: sum(n.startswith(p) for n in noisy) / len(noisy)
    assert 0.55 < share("@") < 0.85 and 0.15 < sum("http" in n for n in noisy) / len(noisy) < 0.45
    k = sweep.kept(torch.tensor([1, 1, 0, 0, 0, 1]), torch.tensor([1, 1, 1, 1, 0, 0]))
    assert k == {"positives_kept": 0.5, "negatives_kept": 0.5, "balanced": 0.5}
    k = sweep.kept(torch.tensor([1, 0, 0, 0]), torch.tensor([1, 1, 0, 0]))
    assert k["positives_kept"] == 0.5 and k["negatives_kept"] == 1.0 and k["balanced"] == 0.75


def test_settings_parse_to_the_types_the_teacher_config_needs():
    """Fractions stay fractions (lld 0.85 is not truncated to 0), switches are ints, unknown keys stop the sweep."""
    s = _sweep().parse("samples=60000,epochs=3,lld=0.85,freeze_emb=0,lr=2e-4")
    assert s["lld"] == 0.85 and s["freeze_emb"] == 0 and s["lr"] == 2e-4 and s["samples"] == 60000
    assert _sweep().parse("")["freeze_emb"] == 1 and _sweep().parse("")["lld"] == 1.0  # the defaults: the demo teacher's frozen table, no decay
    with pytest.raises(SystemExit, match="unknown setting 'decay'"):
        _sweep().parse("decay=0.9")
