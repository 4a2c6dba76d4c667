"""Validation ranking metrics inside an unchanged HF `Trainer` (design.md §3 protocol)."""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import metrics_from_ranks, target_ranks

VALIDATION_KS = (1, 5, 10, 20)


def _labelled_rows(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten [batch, queries, items] logits to the rows that carry a label."""
    if logits.ndim == 2:
        if labels.ndim == 2:  # logits already reduced by keep_labelled_logits: one label per row
            labels = labels.max(axis=1)
        keep = labels != -100
        return logits[keep], labels[keep]
    keep = labels != -100
    return logits[keep], labels[keep]


class RankingMetrics:
    """`compute_metrics` for Trainer: full-catalog HR@k / NDCG@k / MRR with pessimistic ties.

    Every labelled query in the eval set is one user-target pair; build validation sets with one
    label per user (the validation target) so the mean is per user.
    """

    def __init__(self, ks=VALIDATION_KS):
        self.ks = tuple(ks)

    def __call__(self, eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        scores, targets = _labelled_rows(np.asarray(logits), np.asarray(labels))
        ranks = target_ranks(torch.from_numpy(np.ascontiguousarray(scores)), torch.from_numpy(targets.astype(np.int64)))
        return metrics_from_ranks(ranks, self.ks)


def keep_labelled_logits(logits, labels):
    """`preprocess_logits_for_metrics`: keep only logits at labelled queries (saves eval memory).

    Returns [batch, items] when each row has one label (the validation layout), padding rows
    without a label with zeros (their label row is all -100, so metrics skip them).
    """
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.dim() == 2:
        return logits
    has_label = labels != -100
    position = has_label.float().argmax(dim=1)
    picked = logits[torch.arange(logits.shape[0], device=logits.device), position]
    return picked
