"""Vocabulary pruning keeps ids' embeddings and tokenization of kept words."""
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compression.vocab import VocabPruneConfig, coverage, prune_vocab


def test_kept_tokens_keep_rows_and_encoding(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    old_emb = model.get_input_embeddings().weight.detach().clone()
    corpus = ["the film was good", "a boring plot", "superb acting !"]
    model, new_tok, keep = prune_vocab(model, tok, corpus, VocabPruneConfig())
    assert len(keep) < len(tok) and model.config.vocab_size == len(keep)
    new_emb = model.get_input_embeddings().weight
    for new_id, old_id in enumerate(keep):
        assert torch.equal(new_emb[new_id], old_emb[old_id])
    for text in corpus + ["good plot the film", "superb !"]:  # kept words, any order
        old_ids = tok(text)["input_ids"]
        new_ids = new_tok(text)["input_ids"]
        assert [keep[i] for i in new_ids] == old_ids
    unseen = new_tok("ugly")["input_ids"]
    assert new_tok.unk_token_id in unseen
    assert coverage(tok, keep, ["the film", "ugly film"]) == 3 / 4


def test_pruned_model_predicts_like_original_on_kept_words(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    texts = ["the film was good", "a boring plot"]
    with torch.no_grad():
        ref = model(**tok(texts, padding=True, return_tensors="pt")).logits
        pruned, new_tok, _ = prune_vocab(model, tok, texts, VocabPruneConfig())
        got = pruned(**new_tok(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(got, ref)
