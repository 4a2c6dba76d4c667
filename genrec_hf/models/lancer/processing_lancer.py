"""LANCER's input format and processor: `<instruction> item_1 <sep> item_2 <sep> ... item_n <sep>`.

    processor = LancerProcessor(tokenizer, catalog, variant="full")   # = SeqRecProcessor(..., method="lancer")
    inputs = processor(histories)                 # left-padded: decoder-only generation continues the text
    model.set_catalog(processor.item_token_table(), processor.item_detail_table())
    out = model.recommend(**inputs, top_k=10)

Two texts per item (paper §3.2-3.3, Table 3's variants):
- the *sequence text*, what the LM reads in a history and generates (the title; `item_<n>` for
  the `id` variant), each item followed by the separator, so the separator ends a generated item;
- the *detail text* (title, year, genres for `full`; the title for `title`), which the knowledge
  stage trains on and from which each item's vector h_i (eq. 5) is read.

`prompt_item_ids` are the history items whose vectors query the knowledge prompt (the reasoning
prompt, eq. 6-9): the window of the last `max_items` items, -1 padded.

The shared machinery is `processing_base.py` and `catalog.py` (symlinks to `genrec_hf/data/`), so
a saved folder carries the processor's code and loads with `AutoProcessor` as Hub remote code.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import BatchEncoding

from .processing_base import PAD_VALUES, SeqRecProcessorBase

# the paper's ablation variants (Table 3) -> the item texts they use; "bare" also drops the
# instruction here and both prompts in the model (LancerConfig(use_knowledge_prompt=False,
# use_reasoning_prompt=False), as the train_lancer recipe sets for it)
VARIANTS = {
    "full": {"item_template": "title", "detail_template": "title_year_genres"},
    "title": {"item_template": "title", "detail_template": "title"},
    "id": {"item_template": "id", "detail_template": "id"},
    "bare": {"item_template": "title", "detail_template": "title"},
}

LANCER_DEFAULTS = {
    "variant": "full",
    "max_items": 10,  # paper: the last 10 items
    "max_item_tokens": 32,  # paper: at most 32 tokens per item
    "max_length": 512,  # paper: 512 input tokens
    "instruction": "A user watched sequence of movies:",  # paper §4 template study; "" = none
    "separator": " ->",  # paper: " -> " (the item texts carry the leading space)
    "item_template": None,  # sequence text: a catalog template / format string, or "id"; None = the variant's
    "detail_template": None,  # detail text, same choices; None = the variant's
    "loss_on": "items",  # "items": every item's tokens (eq. 2); "target": the last item's only
    # which reasoning-prompt slots a training token attends (the paper is silent): "all" = every slot
    # from the first token (a plain prefix, as the paper's equations read), although with
    # loss_on="items" it shows each window item's vector to the tokens that must predict it;
    # "causal" = slot j once the text has read item j, which removes that but validated worse on
    # ml-100k (benchmarks/RESULTS.md, LANCER). Generation reads the whole history either way.
    "prompt_visibility": "all",
    "seed": 42,  # the id variant's random item numbering
    "item_numbers": None,  # catalog id -> the number in `item_<n>` (filled for the id variant)
}


class LancerFormat:
    """`<instruction> t_1 <sep> t_2 <sep> ... t_n <sep>`; labels on the item (and separator) tokens."""

    defaults = LANCER_DEFAULTS
    training_keys = ("labels", "prompt_slots_visible")  # emitted with targets only

    @property
    def output_keys(self) -> tuple[str, ...]:
        keys = ("input_ids", "prompt_item_ids", "history_item_ids", "labels")
        # the plain prefix needs no per-token slot counts (the LM keeps its own 2D-mask path)
        return keys + ("prompt_slots_visible",) if self.p.settings["prompt_visibility"] == "causal" else keys

    def __init__(self, processor: "LancerProcessor"):
        self.p = processor
        s = processor.settings
        if s["variant"] not in VARIANTS:
            raise ValueError(f"unknown LANCER variant {s['variant']!r}: use one of {sorted(VARIANTS)}")
        for key, value in VARIANTS[s["variant"]].items():
            if s[key] is None:
                s[key] = value
        if s["variant"] == "bare":
            s["instruction"] = ""  # no template (Table 3's LANCER-bare)
        if s["loss_on"] not in ("items", "target"):
            raise ValueError(f"loss_on must be 'items' or 'target', got {s['loss_on']!r}")
        if s["prompt_visibility"] not in ("causal", "all"):
            raise ValueError(f"prompt_visibility must be 'causal' or 'all', got {s['prompt_visibility']!r}")
        if s["max_items"] < 1 or s["max_item_tokens"] < 1:
            raise ValueError("max_items and max_item_tokens must be >= 1")
        if "id" in (s["item_template"], s["detail_template"]) and s["item_numbers"] is None:
            # a seeded permutation: numbering items in the order users met them would leak the target
            s["item_numbers"] = np.random.default_rng(s["seed"]).permutation(len(processor.catalog)).tolist()
        if not s["separator"].strip():
            raise ValueError("the separator must contain a visible character: it is what ends a generated item")
        # the separator and the instruction as they follow an item / start the text (no extra space)
        self.separator_ids = processor.tokenizer(s["separator"], add_special_tokens=False)["input_ids"]
        self.instruction_ids = (
            processor.tokenizer(s["instruction"], add_special_tokens=False)["input_ids"] if s["instruction"] else []
        )
        self._detail_tokens: list[list[int]] | None = None

    def _texts(self, template: str) -> list[str]:
        if template == "id":
            return [f"item_{n}" for n in self.p.settings["item_numbers"]]
        return self.p.catalog.with_template(template).texts()

    def item_texts(self) -> list[str]:
        return self._texts(self.p.settings["item_template"])

    def detail_texts(self) -> list[str]:
        return self._texts(self.p.settings["detail_template"])

    def detail_tokens(self) -> list[list[int]]:
        if self._detail_tokens is None:
            self._detail_tokens = self.p.tokenize(self.detail_texts(), self.p.settings["max_item_tokens"])
        return self._detail_tokens

    def fixed_cost(self) -> int:
        return len(self.p.prefix()) + len(self.instruction_ids) + self.longest_item()  # room for one generated item

    def longest_item(self) -> int:
        if not hasattr(self, "_longest"):
            self._longest = max(len(t) for t in self.p.item_tokens()) + len(self.separator_ids)
        return self._longest

    def item_cost(self, item: int) -> int:
        return len(self.p.item_tokens()[item]) + len(self.separator_ids)

    def encode(self, history, target=None, user=None, mask_position=None) -> dict:
        """history -> the text of its last items; with `target`, the target follows as one more item
        and labels cover the item tokens (loss_on="items") or the target's (loss_on="target")."""
        if mask_position is not None:
            raise ValueError("mask_position is a GenRec input; LANCER predicts the next item")
        window = self.p.window(history)
        tokens, sep = self.p.item_tokens(), self.separator_ids
        ids = self.p.prefix() + self.instruction_ids
        labels = [-100] * len(ids)
        items = window + ([target] if target is not None else [])
        visible = [0] * len(ids)  # per token: how many reasoning-prompt slots (window items, in order) it attends
        for pos, item in enumerate(items):
            piece = tokens[item] + sep
            ids.extend(piece)
            labelled = self.p.settings["loss_on"] == "items" or pos == len(items) - 1
            labels.extend(piece if labelled and target is not None else [-100] * len(piece))
            # slot `pos` opens at the piece's last token: from there on the text has read the item
            visible.extend([min(pos, len(window))] * (len(piece) - 1) + [min(pos + 1, len(window))])
        row = {"input_ids": ids, "labels": labels, "prompt_item_ids": list(window), "history_item_ids": list(history)}
        if self.p.settings["prompt_visibility"] == "causal":
            row["prompt_slots_visible"] = visible
        return row


class LancerProcessor(SeqRecProcessorBase):
    """Tokenizer + item catalog -> LANCER inputs (input_ids, attention_mask, prompt_item_ids,
    history_item_ids, labels). Text keys are padded on the left: the LM continues the text."""

    method = "lancer"
    format_class = LancerFormat

    @property
    def separator_ids(self) -> list[int]:
        return list(self.format.separator_ids)

    def pad(self, data: dict, return_tensors: str | None = "pt") -> BatchEncoding:
        """Left-pad input_ids (pad id), attention_mask, labels and prompt_slots_visible; right-pad the
        item-id keys with -1."""
        ids = data["input_ids"]
        width = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id
        out = {
            "input_ids": [[pad] * (width - len(r)) + list(r) for r in ids],
            "attention_mask": [[0] * (width - len(r)) + [1] * len(r) for r in ids],
        }
        if "labels" in data:
            out["labels"] = [[-100] * (width - len(r)) + list(r) for r in data["labels"]]
        if "prompt_slots_visible" in data:  # token-aligned like labels
            out["prompt_slots_visible"] = [[0] * (width - len(r)) + list(r) for r in data["prompt_slots_visible"]]
        for key, rows in data.items():
            if key in ("input_ids", "labels", "prompt_slots_visible"):
                continue
            w = max(1, max(len(r) for r in rows))
            out[key] = [list(r) + [PAD_VALUES.get(key, -1)] * (w - len(r)) for r in rows]
        return BatchEncoding(out, tensor_type=return_tensors)

    def knowledge_inputs(self, item_ids: Sequence[int], return_tensors: str | None = "pt") -> BatchEncoding:
        """The knowledge stage's rows (§3.2): each item's detail text, labelled with itself."""
        item_ids = [int(i) for i in item_ids]
        self.check_histories([[i] for i in item_ids])
        detail = self.format.detail_tokens()
        rows = [self.prefix() + detail[i] for i in item_ids]
        labels = [[-100] * len(self.prefix()) + detail[i] for i in item_ids]
        return self.pad({"input_ids": rows, "labels": labels}, return_tensors=return_tensors)

    def _table(self, rows: list[list[int]]) -> torch.LongTensor:
        width = max(len(r) for r in rows)
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)

    def item_token_table(self) -> torch.LongTensor:
        """[num_items, width] sequence-text tokens of every item (no separator), -1 padded: what
        the model generates, maps by cosine similarity and keeps on its trie."""
        return self._table(self.item_tokens())

    def item_detail_table(self) -> torch.LongTensor:
        """[num_items, width] prefix + detail-text tokens, -1 padded: what item vectors h_i are read from."""
        return self._table([self.prefix() + t for t in self.format.detail_tokens()])


LancerProcessor.register_for_auto_class()

__all__ = ["LANCER_DEFAULTS", "LancerFormat", "LancerProcessor", "VARIANTS"]
