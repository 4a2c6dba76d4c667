"""Output types shared by the recommenders and the evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class RecommendationOutput(ModelOutput):
    """Top-k recommendations (design.md §2).

    item_ids: LongTensor [batch, top_k], catalog ids, best first, no duplicates; -1 pads rows
        with fewer valid items (generative methods whose beams were invalid or duplicated).
    scores: FloatTensor [batch, top_k]; -inf where item_ids is -1.
    num_valid: LongTensor [batch], generated candidates that mapped to a catalog item
        (generative methods; None for scoring methods, which are always valid).
    num_generated: LongTensor [batch], candidates generated (beams).
    """

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    num_valid: torch.LongTensor | None = None
    num_generated: torch.LongTensor | None = None
