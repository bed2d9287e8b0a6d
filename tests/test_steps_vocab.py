"""Vocabulary pruning keeps ids' embeddings and tokenization of kept words."""
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compression.steps.vocab import VocabPruneConfig, coverage, kept_ids, prune_vocab, unk_rate

CORPUS_ONLY = VocabPruneConfig(general_words=0, keep_chars=False)


def test_kept_tokens_keep_rows_and_encoding(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    old_emb = model.get_input_embeddings().weight.detach().clone()
    corpus = ["the film was good", "a boring plot", "superb acting !"]
    model, new_tok, keep = prune_vocab(model, tok, corpus, CORPUS_ONLY)
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
        pruned, new_tok, _ = prune_vocab(model, tok, texts, CORPUS_ONLY)
        got = pruned(**new_tok(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(got, ref)


def test_kept_characters_spell_out_unseen_words_instead_of_unk(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    fresh = lambda: AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()  # noqa: E731 (pruning is in place)
    corpus = ["the film was good"]
    _, corpus_tok, _ = prune_vocab(fresh(), tok, corpus, CORPUS_ONLY)
    _, char_tok, keep = prune_vocab(fresh(), tok, corpus, VocabPruneConfig(general_words=0, keep_chars=True))
    assert unk_rate(corpus_tok, ["ugly plot"]) == 1.0           # both words unseen: [UNK] each
    assert unk_rate(char_tok, ["ugly plot"]) == 0.0             # spelled out in single-character pieces
    assert char_tok.convert_ids_to_tokens(char_tok("ugly")["input_ids"])[1:-1] == ["u", "##g", "##l", "##y"]
    assert unk_rate(char_tok, ["the film was good"]) == 0.0 and len(keep) < len(tok)


def test_general_words_keep_pieces_of_frequent_english_words(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    corpus_only = set(kept_ids(tok, ["good"], general_words=0))
    general = set(kept_ids(tok, ["good"], general_words=200))
    the_id = tok.convert_tokens_to_ids("the")                  # "the" is the most frequent English word
    assert the_id not in corpus_only and the_id in general
    assert corpus_only < general
