"""Top-k over full-catalog scores, shared by the scoring models (ST2SI, SASRec, GRU4Rec).

Self-contained (torch only): each scoring model's folder holds a symlink to this file, so a saved
checkpoint carries a copy next to the modeling file that imports it (Hub remote code).
"""

from __future__ import annotations

import torch


def top_k_items(scores: torch.Tensor, top_k: int, exclude_history: bool = False,
                history_item_ids: torch.LongTensor | None = None) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """(item_ids, scores), each [batch, min(top_k, num_items)], best first, from scores [batch, num_items].

    exclude_history: seen items (history_item_ids [batch, length], -1 pads) get -inf; a list longer
    than the unseen items pads with -1 (as generative lists do), never a seen item."""
    if exclude_history:
        if history_item_ids is None:
            raise ValueError("exclude_history=True needs history_item_ids (the processor returns them)")
        hist = history_item_ids.to(scores.device)
        # scatter_add, not scatter: padding (-1 -> index 0) must not undo a real hit on item 0
        seen = torch.zeros_like(scores).scatter_add_(1, hist.clamp(min=0), (hist >= 0).to(scores.dtype)) > 0
        scores = scores.masked_fill(seen, float("-inf"))
    top = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return top.indices.masked_fill(top.values == float("-inf"), -1), top.values


__all__ = ["top_k_items"]
