"""The input format of item-ID sequence models (SASRec, GRU4Rec): no text, no tokenizer.

A history becomes `input_ids` = catalog ids + 1 (0 is the padding row of the item embedding, as
in RecBole), newest `max_items` items, right-padded; `labels` hold the item after each position
(the last one: the target), so one causal pass trains every position.

Self-contained (torch, transformers and the same-folder `processing_base.py`): each ID model's
folder holds a symlink to this file, so its processor ships with a checkpoint as Hub remote code.
"""

from __future__ import annotations

from typing import Sequence

from .processing_base import SeqRecProcessorBase

ITEM_ID_DEFAULTS = {"max_items": 50}


class ItemIDFormat:
    """`input_ids` = window ids + 1; labels: the next item at each position (-100 = none)."""

    defaults = ITEM_ID_DEFAULTS
    output_keys = ("input_ids", "history_item_ids", "labels")
    uses_tokenizer = False
    pad_id = 0  # row 0 of the item embedding; catalog item i is row i + 1

    def __init__(self, processor: "ItemIDProcessor"):
        self.p = processor
        max_items = processor.settings["max_items"]
        if not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 1:
            raise ValueError(f"max_items must be an integer >= 1, got {max_items!r}")

    def encode(self, history: Sequence[int], target=None, user=None, mask_position=None) -> dict:
        if mask_position is not None:
            raise ValueError("mask_position is a GenRec input; item-ID models predict the next item at each position")
        window = list(history[-self.p.settings["max_items"]:])
        labels = window[1:] + [target if target is not None else -100]
        return {"input_ids": [i + 1 for i in window], "labels": labels, "history_item_ids": list(history)}


class ItemIDProcessor(SeqRecProcessorBase):
    """Item catalog -> item-ID model inputs (input_ids, attention_mask, history_item_ids, labels).

    `tokenizer` is accepted for the shared `SeqRecProcessor(tokenizer, catalog, method=...)`
    signature and must be None: these models read no text."""

    format_class = ItemIDFormat

    def __init__(self, tokenizer=None, catalog=None, **settings):
        if tokenizer is not None:
            raise ValueError(f"{type(self).__name__} reads item ids, not text: pass tokenizer=None")
        if catalog is None:
            raise ValueError(f"{type(self).__name__} needs the item catalog")
        super().__init__(None, catalog, **settings)

    def item_tokens(self):
        raise TypeError(f"{type(self).__name__} has no item text tokens: its inputs are item ids")


__all__ = ["ITEM_ID_DEFAULTS", "ItemIDFormat", "ItemIDProcessor"]
