"""What the item-ID sequence models (SASRec, GRU4Rec) share: a sequence encoder over item-ID
embeddings, scores = dot products with the (tied) item embeddings over the whole catalog,
cross-entropy on the next item at every position, as RecBole trains them with `loss_type: CE`.

Self-contained (torch and transformers only): each ID model's folder holds a symlink to this
file, so a saved checkpoint carries it next to the modeling file (Hub remote code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .losses import labelled_cross_entropy
from .saving import SafetensorsOnlyLoading, give_weights_the_umask_mode
from .scoring import top_k_items


@dataclass
class ItemIDSeqRecOutput(ModelOutput):
    """
    loss: cross-entropy over the labelled positions (when `labels` is given).
    logits: FloatTensor [batch, seq, num_items], catalog scores at every position; None while
        training with labels (the loss only needs the labelled rows, which saves [batch, seq,
        num_items] of memory on large catalogs).
    hidden_states: FloatTensor [batch, seq, hidden], the encoder's output.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: torch.FloatTensor | None = None


@dataclass
class ItemIDRecommendationOutput(ModelOutput):
    """item_ids: LongTensor [batch, top_k], catalog ids best first (-1 pads where exclude_history
    leaves fewer than top_k items); scores: FloatTensor [batch, top_k] (-inf at the pads)."""

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    num_valid: torch.LongTensor | None = None
    num_generated: torch.LongTensor | None = None


class ItemIDSeqRecModel(SafetensorsOnlyLoading, PreTrainedModel):
    """Base of the ID models. Subclasses build `self.item_embedding` (nn.Embedding with
    num_items + 1 rows, row 0 = padding) and implement `encode(input_ids, attention_mask)`,
    which must be causal: the state at position t may depend on items 0..t only."""

    main_input_name = "input_ids"

    def save_pretrained(self, save_directory, *args, **kwargs):
        out = super().save_pretrained(save_directory, *args, **kwargs)
        give_weights_the_umask_mode(save_directory)
        return out

    def get_input_embeddings(self):
        return self.item_embedding

    def set_input_embeddings(self, value):
        self.item_embedding = value

    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.FloatTensor:
        raise NotImplementedError

    def item_vectors(self) -> torch.FloatTensor:
        """[num_items, hidden]: the output item vectors (the input embeddings without the padding row)."""
        return self.item_embedding.weight[1:]

    def _check_input_ids(self, input_ids: torch.LongTensor) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        bad = (input_ids < 0) | (input_ids > self.config.num_items)
        if bool(bad.any()):
            raise ValueError(f"unknown item id {int(input_ids[bad][0]) - 1} in input_ids: the catalog has "
                             f"{self.config.num_items} items (input_ids are catalog ids + 1, 0 = padding; "
                             "build them with the model's processor)")
        if input_ids.shape[1] > self.config.max_items:
            raise ValueError(f"input of {input_ids.shape[1]} items is longer than max_items={self.config.max_items}")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        history_item_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ItemIDSeqRecOutput:
        """
        input_ids: LongTensor [batch, seq], catalog ids + 1, right-padded with 0.
        attention_mask: [batch, seq], 1 at items (default: input_ids != 0).
        labels: LongTensor [batch, seq], the catalog id of the next item at each position, -100 = ignore.
        history_item_ids: [batch, length] (-1 pads); only `recommend` uses it.
        """
        if input_ids is None:
            raise ValueError("pass input_ids (catalog ids + 1, from the model's processor)")
        self._check_input_ids(input_ids)
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        hidden = self.encode(input_ids, attention_mask)
        loss = logits = None
        if labels is not None:
            labels = labels.to(hidden.device)
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels have shape {tuple(labels.shape)}, input_ids {tuple(input_ids.shape)}")
            keep = (labels != -100) & attention_mask.bool()
            bad = keep & ((labels < 0) | (labels >= self.config.num_items))
            if bool(bad.any()):
                raise ValueError(f"unknown item id {int(labels[bad][0])} in labels: the catalog has {self.config.num_items} items")
            scores = hidden[keep] @ self.item_vectors().T  # [labelled positions, num_items]
            loss = labelled_cross_entropy(scores, labels[keep], kwargs.get("num_items_in_batch"))
        if labels is None or not self.training:
            logits = hidden @ self.item_vectors().T
        return ItemIDSeqRecOutput(loss=loss, logits=logits, hidden_states=hidden)

    # -- recommendation ---------------------------------------------------------------------------
    @torch.no_grad()
    def item_scores(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.FloatTensor:
        """Full-catalog scores [batch, num_items] at each row's newest item."""
        self._check_input_ids(input_ids)
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        lengths = attention_mask.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("empty history: a recommendation needs at least one interacted item")
        hidden = self.encode(input_ids, attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        return last @ self.item_vectors().T

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        top_k: int = 10,
        exclude_history: bool = False,
        history_item_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> ItemIDRecommendationOutput:
        """Top-k catalog items per row, ranked over the whole catalog (design.md §2)."""
        scores = self.item_scores(input_ids, attention_mask).float()
        item_ids, top_scores = top_k_items(scores, top_k, exclude_history, history_item_ids)
        return ItemIDRecommendationOutput(item_ids=item_ids, scores=top_scores)


__all__ = ["ItemIDRecommendationOutput", "ItemIDSeqRecModel", "ItemIDSeqRecOutput"]
