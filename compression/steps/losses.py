"""Distillation losses: pure functions of tensors (as in TextBrewer), no model, no state."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(logits_s: torch.Tensor, logits_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) · T², batch mean (T² keeps gradients T-invariant)."""
    t = temperature
    return F.kl_div(F.log_softmax(logits_s / t, -1), F.log_softmax(logits_t / t, -1), log_target=True, reduction="batchmean") * t * t


def logit_mse(logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the raw logits (Tang et al. 2019; Kim et al. 2021 found it
    beats KL): unlike KL at temperature T its gradient does not fade where the teacher is sure,
    so the student copies the teacher's margins, not just its side of the boundary."""
    return F.mse_loss(logits_s, logits_t)


KD_LOSSES = ("kl", "mse")  # the names a recipe's ``kd_loss`` accepts


def check_kd_loss(kind: str) -> None:
    """The one check of a KD loss name: recipes (``TrainConfig``) and ``distill_loss`` both call it."""
    if kind not in KD_LOSSES:
        raise ValueError(f"kd_loss must be one of {', '.join(KD_LOSSES)}, got {kind!r}")


def hidden_mse(hidden_s: list[torch.Tensor], hidden_t: list[torch.Tensor], mapping: list[int], mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT-style MSE between student layer i and teacher layer mapping[i] (masked tokens only)."""
    m = mask.unsqueeze(-1).float()
    losses = [(((hidden_s[i] - hidden_t[j]) ** 2) * m).sum() / (m.sum() * hidden_s[i].shape[-1]) for i, j in enumerate(mapping)]
    return torch.stack(losses).mean()


IGNORE = -100  # a row without a gold label (an augmented sentence): learnt from the teacher's logits only


def distill_loss(logits_s, logits_t, labels, alpha: float, temperature: float, kind: str = "kl") -> torch.Tensor:
    """α·KD + (1−α)·CE, the CE over the rows with a gold label (label ``IGNORE``: the teacher's soft
    label only, as augmented sentences carry; a batch of only those is KD alone). ``kind``: the KD
    term, "kl" (``kd_loss`` at ``temperature``) or "mse" (``logit_mse``; temperature unused)."""
    check_kd_loss(kind)
    gold = labels != IGNORE
    ce = F.cross_entropy(logits_s, labels, ignore_index=IGNORE, reduction="sum") / gold.sum().clamp(min=1)
    kd = kd_loss(logits_s, logits_t, temperature) if kind == "kl" else logit_mse(logits_s, logits_t)
    return alpha * kd + (1 - alpha) * ce
