"""ST2SI's input format and processor: `T_1 [Q] T_2 [Q] ... T_n [Q]` (multi-query input, eq. 2).

    processor = ST2SIProcessor(tokenizer, catalog, max_items=50)   # = SeqRecProcessor(..., method="st2si")
    inputs = processor(histories)            # histories: lists of catalog ids, oldest first
    model.recommend(**inputs, top_k=10); processor.decode_items(out.item_ids)

Every method follows this pattern: `processing_<method>.py` next to the model holds the method's
format (what the processor writes for it) and its processor class, a subclass of the shared
`SeqRecProcessorBase` (`processing_base.py` and `catalog.py` are symlinks to `genrec_hf/data/`).
`register_for_auto_class()` makes `save_pretrained` copy these files next to the weights, so the
processor loads as Hub remote code like the model.
"""

from __future__ import annotations

from typing import Sequence

from transformers import BatchEncoding

from .processing_base import SeqRecProcessorBase

ST2SI_DEFAULTS = {
    "max_items": 50,
    "max_item_tokens": 32,
    "max_length": None,
    "query_token": "[Q]",
    "multi_query": True,
    "alignment_instruction": "Please give the ID of the following item:",
}


class ST2SIFormat:
    """`T_1 [Q] T_2 [Q] ... T_n [Q]` (multi-query input, ST2SI eq. 2); labels: the next item at each [Q]."""

    defaults = ST2SI_DEFAULTS
    output_keys = ("input_ids", "history_item_ids", "labels")

    def __init__(self, processor: "ST2SIProcessor"):
        self.p = processor
        s = processor.settings
        if s["max_items"] < 1 or s["max_item_tokens"] < 1:
            raise ValueError("max_items and max_item_tokens must be >= 1")
        self.query_token_id = processor.add_special_token(s["query_token"])

    def item_texts(self) -> list[str]:
        return self.p.catalog.texts()

    def fixed_cost(self) -> int:
        return len(self.p.prefix()) + (0 if self.p.settings["multi_query"] else 1)

    def item_cost(self, item: int) -> int:
        return len(self.p.item_tokens()[item]) + (1 if self.p.settings["multi_query"] else 0)

    def encode(self, history, target=None, user=None, mask_position=None) -> dict:
        if mask_position is not None:
            raise ValueError("mask_position is a GenRec input; ST2SI predicts the next item at each query")
        window = self.p.window(history)
        tokens, q = self.p.item_tokens(), self.query_token_id
        ids = self.p.prefix()
        if self.p.settings["multi_query"]:
            for item in window:
                ids.extend(tokens[item])
                ids.append(q)
            # query j predicts the item after window[j]; the last one predicts `target`
            labels = window[1:] + [target if target is not None else -100]
        else:
            for item in window:
                ids.extend(tokens[item])
            ids.append(q)
            labels = [target if target is not None else -100]
        return {"input_ids": ids, "labels": labels, "history_item_ids": list(history)}


class ST2SIProcessor(SeqRecProcessorBase):
    """Tokenizer + item catalog -> ST2SI inputs (input_ids, attention_mask, history_item_ids, labels)."""

    method = "st2si"
    format_class = ST2SIFormat

    @property
    def query_token_id(self) -> int:
        return self.format.query_token_id

    def alignment_inputs(self, item_ids: Sequence[int], return_tensors: str | None = "pt") -> BatchEncoding:
        """ST2SI ID-alignment instructions (§3.3): "<instruction> <item text> [Q]" labelled with the item's id."""
        item_ids = [int(i) for i in item_ids]
        self.check_histories([[i] for i in item_ids])
        instruction = self.tokenize([self.settings["alignment_instruction"]], None)[0]
        tokens = self.item_tokens()
        data = {
            "input_ids": [self.prefix() + instruction + tokens[i] + [self.query_token_id] for i in item_ids],
            "labels": [[i] for i in item_ids],
        }
        return self.pad(data, return_tensors=return_tensors)


ST2SIProcessor.register_for_auto_class()

__all__ = ["ST2SI_DEFAULTS", "ST2SIFormat", "ST2SIProcessor"]
