"""Classical baselines with the recommenders' API (design.md §2)."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .evaluation import mask_history
from .outputs import RecommendationOutput


def _as_histories(histories) -> list[list[int]]:
    """Lists of catalog ids, or a padded LongTensor [batch, length] (negative = padding)."""
    if isinstance(histories, torch.Tensor):
        return [[int(i) for i in row if i >= 0] for row in histories.tolist()]
    return [list(map(int, h)) for h in histories]


class PopularityRecommender:
    """Ranks every item by its number of training interactions (the same list for every user).

    Counted on the training sequences only, so validation and test targets never leak in.
    Equal counts tie, and ties are ranked pessimistically by the evaluator.
    """

    def __init__(self, counts: torch.Tensor):
        if counts.dim() != 1:
            raise ValueError("counts must be a vector [num_items]")
        self.counts = counts.float()

    @property
    def num_items(self) -> int:
        return self.counts.numel()

    @classmethod
    def fit(cls, train_sequences: Iterable[Sequence[int]], num_items: int) -> "PopularityRecommender":
        counts = torch.zeros(num_items)
        for seq in train_sequences:
            for item in seq:
                if not 0 <= item < num_items:
                    raise ValueError(f"unknown item id {item}: catalog has {num_items} items")
                counts[item] += 1
        return cls(counts)

    def _check(self, histories: list[list[int]]) -> None:
        for h in histories:
            if not h:
                raise ValueError("empty history: a recommendation needs at least one interacted item")
            bad = [i for i in h if not 0 <= i < self.num_items]
            if bad:
                raise ValueError(f"unknown item id {bad[0]}: catalog ids run from 0 to {self.num_items - 1}")

    def score_items(self, histories, users=None) -> torch.Tensor:
        histories = _as_histories(histories)
        self._check(histories)
        return self.counts.expand(len(histories), -1).clone()

    def recommend(self, histories, top_k: int = 10, exclude_history: bool = False, users=None) -> RecommendationOutput:
        histories = _as_histories(histories)
        scores = self.score_items(histories)
        if exclude_history:
            scores = mask_history(scores, histories)
        top = scores.topk(min(top_k, self.num_items), dim=1)
        return RecommendationOutput(item_ids=top.indices, scores=top.values)
