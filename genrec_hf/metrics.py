"""Full-ranking metrics with pessimistic ties (design.md §3).

rank = 1 + number of *other* items whose score is >= the target's, so a model that outputs a
constant scores zero. HR@k (= Recall@k with one target), NDCG@k = 1/log2(rank+1) for rank <= k,
MRR = mean 1/rank over ranks <= max(ks) (MRR@K with K the largest cut-off, 20 by default):
the cut makes a constant model score exactly 0 and puts scoring methods (which rank every item)
and generative ones (whose lists end at K) on the same footing. Everything is averaged per user:
accumulate ranks, then call `metrics_from_ranks` once.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

DEFAULT_KS = (1, 5, 10, 20)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    return ks


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pessimistic 1-based rank of each target in a full score matrix.

    Args:
        scores: FloatTensor [batch, num_items]; NaN counts as -inf.
        targets: LongTensor [batch] of catalog ids.
    Returns:
        FloatTensor [batch] of ranks in 1..num_items.
    """
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, device=scores.device).long()
    if scores.dim() != 2:
        raise ValueError(f"scores must be [batch, num_items], got shape {tuple(scores.shape)}")
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"targets must be [batch]={scores.shape[0]}, got shape {tuple(targets.shape)}")
    num_items = scores.shape[1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_items):
        bad = targets[(targets < 0) | (targets >= num_items)][0].item()
        raise ValueError(f"unknown item id {bad} in targets: scores cover items 0..{num_items - 1}")
    if not scores.is_floating_point():
        scores = scores.double()  # integer scores: exact in float64; floats keep their own dtype
    # NaN ranks as -inf (nan_to_num would also turn -inf into -FLT_MAX, above a NaN)
    scores = scores.masked_fill(torch.isnan(scores), -math.inf)
    target_scores = scores.gather(1, targets[:, None])
    # counts the target itself, so this is 1 + the number of other items scored >= it
    return (scores >= target_scores).sum(dim=1).double()


def ranked_list_ranks(ranked_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target in a ranked list of catalog ids ([batch, length], -1 = padding).

    Duplicates count once (at their first position); a target not in the list gets rank inf.
    """
    ranked_ids = torch.as_tensor(ranked_ids).long()
    targets = torch.as_tensor(targets, device=ranked_ids.device).long()
    if ranked_ids.dim() != 2:
        raise ValueError(f"ranked_ids must be [batch, length], got shape {tuple(ranked_ids.shape)}")
    if targets.shape != (ranked_ids.shape[0],):
        raise ValueError(f"targets must be [batch]={ranked_ids.shape[0]}, got shape {tuple(targets.shape)}")
    length = ranked_ids.shape[1]
    valid = ranked_ids >= 0
    same = ranked_ids[:, :, None] == ranked_ids[:, None, :]
    earlier = torch.ones(length, length, dtype=torch.bool, device=ranked_ids.device).tril(-1)
    first = valid & ~(same & earlier).any(dim=2)
    position = first.cumsum(dim=1)
    hit = first & (ranked_ids == targets[:, None])
    ranks = torch.full((ranked_ids.shape[0],), math.inf, dtype=torch.float64, device=ranked_ids.device)
    found = hit.any(dim=1)
    ranks[found] = position[found].gather(1, hit[found].float().argmax(dim=1, keepdim=True)).squeeze(1).double()
    return ranks


def metrics_from_ranks(ranks: torch.Tensor | Sequence[float], ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Per-user means of HR@k, NDCG@k and MRR (@ max(ks)) from 1-based ranks (inf = miss)."""
    ks = _check_ks(ks)
    ranks = torch.as_tensor(ranks, dtype=torch.float64).flatten()
    if ranks.numel() == 0:
        raise ValueError("no ranks: cannot average metrics over zero users")
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = (ranks <= k).double().mean().item()
    for k in ks:
        gain = torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))
        out[f"ndcg@{k}"] = gain.mean().item()
    cutoff = max(ks)
    out["mrr"] = torch.where(ranks <= cutoff, 1.0 / ranks, torch.zeros_like(ranks)).mean().item()
    return out


def rank_metrics(scores: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@k, NDCG@k, MRR from a score matrix [batch, num_items] over the whole catalog."""
    return metrics_from_ranks(target_ranks(scores, targets), ks)


def ranked_list_metrics(ranked_ids: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@k, NDCG@k, MRR from ranked lists [batch, length] (padding -1 = miss)."""
    return metrics_from_ranks(ranked_list_ranks(ranked_ids, targets), ks)


def format_metrics(metrics: dict[str, float], digits: int = 4) -> str:
    """A two-row table: metric names and values."""
    names = list(metrics)
    width = max(7, digits + 3)
    head = " ".join(f"{n:>{width}}" for n in names)
    row = " ".join(f"{metrics[n]:>{width}.{digits}f}" for n in names)
    return f"{head}\n{row}"


EVALUATE_MODULES = ("seqrec_ranking", "text_overlap")


def evaluate_module_path(name: str = "seqrec_ranking") -> str:
    """Folder of one of genrec_hf's `evaluate` modules, loaded offline by path:
    `evaluate.load(evaluate_module_path())` (HR/NDCG/MRR) or `evaluate_module_path("text_overlap")`
    (BLEU-4 and ROUGE-1/2/L of generated texts)."""
    import os

    if name not in EVALUATE_MODULES:
        raise ValueError(f"unknown evaluate module {name!r}; genrec_hf ships {list(EVALUATE_MODULES)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_metrics", name)


def rating_errors(predictions, references) -> dict[str, float]:
    """RMSE and MAE of predicted ratings (rating prediction, P5's task family 1)."""
    pred = torch.as_tensor(predictions, dtype=torch.float64).reshape(-1)
    true = torch.as_tensor(references, dtype=torch.float64).reshape(-1)
    if pred.shape != true.shape or pred.numel() == 0:
        raise ValueError(f"{pred.numel()} predictions for {true.numel()} ratings: need as many, at least one")
    err = pred - true
    return {"rmse": float(err.pow(2).mean().sqrt()), "mae": float(err.abs().mean())}
