"""KD data augmentation: teacher-labelled variants of the KD sentences (TinyBERT's recipe, offline).

TinyBERT swaps words for their GloVe / masked-LM neighbours and lets the teacher label the new
sentences, so the student learns the teacher's function on more of the input space than the
training phrases cover. Neither GloVe nor an MLM head ships offline, so the neighbours come from
the teacher's own input embedding table (cosine similarity between whole-word pieces). A swap can
flip a sentence's sentiment ("good" sits near "bad" in embedding space): an augmented sentence
therefore carries no gold label (``IGNORE``), only the teacher's soft one.

Pure functions of texts, a vocabulary and an embedding matrix: no model, no build state.
"""
from __future__ import annotations

import random
from typing import Iterable

import torch

from .losses import IGNORE  # the label of an augmented sentence: learnt from the teacher's logits only

__all__ = ["IGNORE", "augment_texts", "neighbour_table", "whole_words"]


def whole_words(vocab: dict[str, int]) -> list[str]:
    """The vocabulary's whole-word pieces that can stand in for a word: alphabetic, 2+ letters
    (``##`` continuations, punctuation, digits and ``[CLS]``-style specials are not)."""
    return sorted(w for w in vocab if len(w) > 1 and w.isalpha() and w.isascii())


def neighbour_table(embeddings: torch.Tensor, vocab: dict[str, int], words: Iterable[str], k: int,
                    chunk: int = 2048) -> dict[str, list[str]]:
    """For each of ``words`` that is a whole-word piece, its ``k`` nearest whole-word pieces by
    cosine similarity of their rows in ``embeddings`` (itself excluded), nearest first."""
    cands = whole_words(vocab)
    pos = {w: i for i, w in enumerate(cands)}
    queries = sorted({w for w in words if w in pos})
    if not queries or len(cands) < 2:
        return {}
    k = min(k, len(cands) - 1)
    table = torch.nn.functional.normalize(embeddings.detach().float()[[vocab[w] for w in cands]], dim=-1)
    out = {}
    for start in range(0, len(queries), chunk):
        part = queries[start : start + chunk]
        rows = torch.tensor([pos[w] for w in part])
        sims = table[rows] @ table.T
        sims[torch.arange(len(part)), rows] = float("-inf")
        top = sims.topk(k, dim=-1).indices
        out.update({w: [cands[j] for j in top[n].tolist()] for n, w in enumerate(part)})
    return out


def _key(word: str, table: dict) -> str | None:
    return word if word in table else word.lower() if word.lower() in table else None


def augment_texts(texts: list[str], table: dict[str, list[str]], copies: int, share: float, seed: int) -> list[str]:
    """``copies`` variants of every text (copy c of text j at ``c * len(texts) + j``): each word
    with neighbours is swapped for a random one of them with probability ``share``, at least one
    word per text where any can be swapped (a text with none comes back unchanged)."""
    if copies < 0 or not 0 < share <= 1:
        raise ValueError(f"copies must be >= 0 and share in (0, 1], got {copies}, {share}")
    rng = random.Random(seed)
    out = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            slots = [i for i, w in enumerate(words) if _key(w, table)]
            picked = [i for i in slots if rng.random() < share] or ([rng.choice(slots)] if slots else [])
            for i in picked:
                words[i] = rng.choice(table[_key(words[i], table)])
            out.append(" ".join(words) if picked else text)
    return out
