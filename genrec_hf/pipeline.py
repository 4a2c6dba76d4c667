"""A model and its processor as one recommender: what the evaluator, the CLI and examples use."""

from __future__ import annotations

import os

import torch

from .processing import SeqRecProcessor


class SeqRecPipeline:
    """`score_items` (full ranking, for scoring methods) and `rank_items` over catalog-id histories."""

    def __init__(self, model, processor: SeqRecProcessor, device: str | torch.device | None = None):
        num_items = getattr(model.config, "num_items", None)
        if num_items is not None and num_items != processor.num_items:
            raise ValueError(
                f"catalog size mismatch: the model predicts {num_items} items but the processor's catalog "
                f"has {processor.num_items}; load the processor saved with this model"
            )
        query_id = getattr(model.config, "query_token_id", None)
        if query_id is not None and query_id != processor.query_token_id:
            raise ValueError(
                f"query token mismatch: the model reads id {query_id}, the processor writes {processor.query_token_id}"
            )
        self.model = model.eval()
        self.processor = processor
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.device != next(model.parameters()).device:
            self.model.to(self.device)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device=None, **model_kwargs) -> "SeqRecPipeline":
        from transformers import AutoModel

        from . import models  # noqa: F401  (registers the methods with the Auto classes)

        directory = str(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"checkpoint folder not found: {directory}")
        processor = SeqRecProcessor.from_pretrained(directory)
        model = AutoModel.from_pretrained(directory, **model_kwargs)
        return cls(model, processor, device=device)

    def _inputs(self, histories):
        return self.processor(histories, return_tensors="pt").to(self.device)

    @torch.no_grad()
    def score_items(self, histories, users=None) -> torch.Tensor:
        inputs = self._inputs(histories)
        return self.model.item_scores(**inputs).float()

    @torch.no_grad()
    def recommend(self, histories, top_k: int = 10, exclude_history: bool = False, users=None):
        return self.model.recommend(**self._inputs(histories), top_k=top_k, exclude_history=exclude_history)
