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
        seen = hist >= 0  # -1 pads
        rows = torch.arange(hist.shape[0], device=scores.device)[:, None].expand_as(hist)[seen]
        # one copy of the scores with -inf written at the seen items (no [batch, num_items] mask)
        scores = scores.index_put((rows, hist[seen]), torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device))
    top = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return top.indices.masked_fill(top.values == float("-inf"), -1), top.values


__all__ = ["top_k_items"]
