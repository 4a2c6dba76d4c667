"""A model and its processor as one recommender: what the evaluator, the CLI and examples use."""

from __future__ import annotations

import inspect
import os

import torch

from .processing import SeqRecProcessor


# recommend options of one method that another method's recommend would pass on to generate()
# (or reject with an unclear message): refused up front unless the model's recommend names them
METHOD_OPTIONS = ("decode", "strategy", "constrained", "num_beams")


def _check_recommend_kwargs(model, recommend_kwargs: dict) -> None:
    params = inspect.signature(model.recommend).parameters
    unknown = [k for k in recommend_kwargs if k in METHOD_OPTIONS and k not in params]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ValueError(f"{type(model).__name__}.recommend has no {names} option (decode and strategy are LANCER's, "
                         "constrained GenRec's and RecSysGLM's)")


class SeqRecPipeline:
    """Recommends from catalog-id histories with any genrec_hf model.

    Scoring models (ST2SI) rank the whole catalog (`score_items`, `full_ranking = True`);
    generative models rank by beam search (`rank_items`). Both offer `recommend`.
    `recommend_kwargs` go to every `model.recommend` call, e.g. `decode="trie", strategy="greedy"`
    for LANCER, `constrained=False` for GenRec and RecSysGLM; an option the model's `recommend` does not name
    is refused here.
    """

    def __init__(self, model, processor: SeqRecProcessor, device: str | torch.device | None = None, **recommend_kwargs):
        num_items = getattr(model.config, "num_items", None)
        if num_items is not None and num_items != processor.num_items:
            raise ValueError(
                f"catalog size mismatch: the model predicts {num_items} items but the processor's catalog "
                f"has {processor.num_items}; load the processor saved with this model"
            )
        processor.check_model_config(model.config.to_dict(), type(model).__name__)
        query_id = getattr(model.config, "query_token_id", None)
        if query_id is not None and query_id != processor.query_token_id:
            raise ValueError(
                f"query token mismatch: the model reads id {query_id}, the processor writes {processor.query_token_id}"
            )
        item_tokens = getattr(model, "item_token_ids", None)
        if item_tokens is not None:
            table = processor.item_token_table()
            stored = item_tokens[:, : table.shape[1]].cpu()
            if table.shape[1] > item_tokens.shape[1] or not torch.equal(stored, table) or bool((item_tokens[:, table.shape[1]:] >= 0).any()):
                raise ValueError("item text mismatch: the model's item token table is not the processor's; load the processor saved with this model")
        # RecSysGLM: the positions the processor writes must be the ones the model generates with
        dynamic = getattr(processor, "settings", {}).get("dynamic_positions")
        if dynamic is not None and getattr(model.config, "dynamic_positions", dynamic) != dynamic:
            raise ValueError(f"dynamic_positions mismatch: the model has {model.config.dynamic_positions}, the processor "
                             f"{dynamic}; load the processor saved with this model")
        _check_recommend_kwargs(model, recommend_kwargs)
        self.model = model.eval()
        self.processor = processor
        self.recommend_kwargs = recommend_kwargs  # e.g. constrained=False, num_beams=30 (GenRec); decode="trie" (LANCER)
        if not hasattr(model, "item_scores") and hasattr(processor.format, "items_from_generated"):
            self.recommend_kwargs.setdefault("sequence_to_item", processor.format.items_from_generated)
        self.full_ranking = hasattr(model, "item_scores")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.device != next(model.parameters()).device:
            self.model.to(self.device)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device=None, recommend_kwargs: dict | None = None, **model_kwargs) -> "SeqRecPipeline":
        from transformers import AutoModel

        from . import models  # noqa: F401  (registers the methods with the Auto classes)

        directory = str(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"checkpoint folder not found: {directory}")
        processor = SeqRecProcessor.from_pretrained(directory)
        model = AutoModel.from_pretrained(directory, **model_kwargs)
        return cls(model, processor, device=device, **(recommend_kwargs or {}))

    def _inputs(self, histories, users=None):
        return self.processor(histories, users=users, return_tensors="pt").to(self.device)

    @torch.no_grad()
    def score_items(self, histories, users=None) -> torch.Tensor:
        """Full-catalog scores [batch, num_items] (scoring models)."""
        if not self.full_ranking:
            raise TypeError(f"{type(self.model).__name__} ranks by generation: use rank_items / recommend")
        return self.model.item_scores(**self._inputs(histories, users))

    @torch.no_grad()
    def rank_items(self, histories, users=None, top_k: int = 20, exclude_history: bool = False):
        return self.recommend(histories, top_k=top_k, exclude_history=exclude_history, users=users)

    @torch.no_grad()
    def recommend(self, histories, top_k: int = 10, exclude_history: bool = True, users=None):
        """Top-k items for people: seen items are left out unless `exclude_history=False` (the
        evaluator ranks with its own, documented default through `rank_items` / `score_items`)."""
        return self.model.recommend(
            **self._inputs(histories, users), top_k=top_k, exclude_history=exclude_history, **self.recommend_kwargs
        )
