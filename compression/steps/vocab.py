"""Vocabulary pruning: keep the word pieces a corpus and general English use, drop the other embedding rows.

For MiniLM about half the parameters are the 30,522-row embedding table; an
SST-2 model needs far fewer rows. Kept ids keep their relative order, so every
kept token maps to the same embedding row as before, and words whose pieces
were all seen tokenize identically (greedy longest-match WordPiece can only pick
a piece that the full vocabulary also picked).
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import artifacts
from ..modeling import require
from ..registry import register_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabPruneConfig:
    """Fields:
        corpus: ``train`` (the recipe's training split) or a local text file (one text per line).
        min_count: keep corpus pieces seen at least this often.
        general_words: also keep the pieces of the N most frequent words of ``language``
            (wordfreq's offline lists). A vocabulary cut to one corpus holds its test set but
            loses other text: SST-2's pieces keep 82.9% of airline-tweet tokens, +20k English
            words 92.4%. 0 keeps the corpus only.
        language: wordfreq language code for ``general_words``.
        keep_chars: keep every single-character piece (``a``, ``##a``, ...), so a word whose
            pieces were dropped is spelled out in characters instead of becoming [UNK].
    """

    corpus: str = "train"
    min_count: int = 1
    general_words: int = 20000
    language: str = "en"
    keep_chars: bool = True

    def __post_init__(self):
        if self.min_count < 1:
            raise ValueError("min_count must be >= 1")
        if self.general_words < 0:
            raise ValueError("general_words must be >= 0")


def _check(cfg: VocabPruneConfig, config) -> None:
    require(config, "wordpiece", "vocabulary pruning (WordPiece tokenizers)")
    if cfg.corpus != "train" and not Path(cfg.corpus).is_file():
        raise ValueError(f"corpus file not found: {cfg.corpus}")


def kept_ids(tokenizer, texts: list[str], min_count: int = 1, general_words: int = 0, language: str = "en",
             keep_chars: bool = False) -> list[int]:
    """Ids to keep: corpus pieces seen ``min_count`` times, the pieces of the top
    ``general_words`` words, single characters (``keep_chars``) and the special tokens."""
    counts = Counter(i for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in ids)
    keep = {i for i, c in counts.items() if c >= min_count} | set(tokenizer.all_special_ids)
    if general_words:
        import wordfreq

        words = wordfreq.top_n_list(language, general_words)
        keep |= {i for ids in tokenizer(words, add_special_tokens=False)["input_ids"] for i in ids}
    if keep_chars:
        keep |= {i for tok, i in tokenizer.get_vocab().items() if len(tok.removeprefix("##")) == 1}
    return sorted(keep)


def unk_rate(tokenizer, texts: list[str]) -> float:
    """Share of tokens that are [UNK] when ``tokenizer`` encodes ``texts``."""
    ids = [i for seq in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in seq]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))


def coverage(tokenizer, keep: list[int], texts: list[str]) -> float:
    """Share of token occurrences in ``texts`` (full tokenizer) that survive pruning."""
    keep_set = set(keep)
    ids = [i for seq in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in seq]
    return sum(i in keep_set for i in ids) / max(1, len(ids))


def prune_tokenizer(tokenizer, keep: list[int]):
    """Rebuild a WordPiece fast tokenizer whose vocabulary is ``keep`` in order."""
    from transformers import AutoTokenizer

    remap = {old: new for new, old in enumerate(keep)}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        spec = json.loads((Path(tmp) / artifacts.TOKENIZER).read_text())
        if spec["model"]["type"] != "WordPiece":
            raise ValueError(f"vocabulary pruning needs a WordPiece tokenizer, not {spec['model']['type']}")
        spec["model"]["vocab"] = {tok: remap[i] for tok, i in spec["model"]["vocab"].items() if i in remap}
        for added in spec.get("added_tokens", []):
            added["id"] = remap[added["id"]]
        post = spec.get("post_processor") or {}
        for special in (post.get("special_tokens") or {}).values():
            special["ids"] = [remap[i] for i in special["ids"]]
        for key in ("cls", "sep"):
            if key in post:
                post[key][1] = remap[post[key][1]]
        if spec.get("padding"):
            spec["padding"]["pad_id"] = remap[spec["padding"]["pad_id"]]
        (Path(tmp) / artifacts.TOKENIZER).write_text(json.dumps(spec))
        inv = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
        (Path(tmp) / "vocab.txt").write_text("\n".join(t for t, _ in inv) + "\n")
        return AutoTokenizer.from_pretrained(tmp)


@torch.no_grad()
def prune_embeddings(model, keep: list[int], pad_id: int | None):
    emb = model.get_input_embeddings()
    new = torch.nn.Embedding(len(keep), emb.embedding_dim, padding_idx=pad_id)
    new.weight.copy_(emb.weight[torch.tensor(keep)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    model.config.pad_token_id = pad_id
    return model


def prune_vocab(model, tokenizer, texts: list[str], cfg: VocabPruneConfig):
    keep = kept_ids(tokenizer, texts, cfg.min_count, cfg.general_words, cfg.language, cfg.keep_chars)
    new_tok = prune_tokenizer(tokenizer, keep)
    model = prune_embeddings(model, keep, new_tok.pad_token_id)
    log.info("vocabulary pruned: %d -> %d word pieces", len(tokenizer), len(keep))
    return model, new_tok, keep


@register_step("vocab_prune", VocabPruneConfig, stage="torch", tags=("vocab-pruned",), check=_check, after_training=True,
               needs_data=lambda cfg: cfg.corpus == "train")
def _vocab_step(state, cfg, ctx):
    """Keep the corpus's word pieces, common English words' pieces and single characters; rebuild tokenizer and embeddings."""
    _check(cfg, state.model.config)
    texts = ctx.splits["train"].texts if cfg.corpus == "train" else Path(cfg.corpus).read_text().splitlines()
    old_tok = state.tokenizer
    state.model, state.tokenizer, keep = prune_vocab(state.model, old_tok, texts, cfg)
    state.notes["vocab_size"] = len(keep)
    state.notes["vocab_coverage"] = coverage(old_tok, keep, ctx.splits["eval"].texts)
    state.notes["vocab_unk_rate"] = unk_rate(state.tokenizer, ctx.splits["eval"].texts)
    if "ood" in ctx.splits:  # measured, never used to choose the vocabulary
        state.notes["ood_vocab_coverage"] = coverage(old_tok, keep, ctx.splits["ood"].texts)
        state.notes["ood_vocab_unk_rate"] = unk_rate(state.tokenizer, ctx.splits["ood"].texts)
    return state
