"""SeqRecProcessor: tokenizer + item catalog + each method's input format, saved next to the model.

    processor = SeqRecProcessor(tokenizer, catalog, method="st2si")
    inputs = processor(histories, return_tensors="pt")      # histories: lists of catalog ids
    model(**inputs); model.recommend(**inputs, top_k=10)
    processor.decode_items(out.item_ids)                      # titles

Item texts are tokenized once and cached, so building a batch is list concatenation.
Histories are truncated from the left by whole items (never mid-item): the last `max_items`
items, then, if `max_length` is set, older items are dropped until the tokens fit.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch
from transformers import AutoTokenizer, BatchEncoding

from .data.catalog import CATALOG_FILE, ItemCatalog

PROCESSOR_CONFIG = "processor_config.json"
METHODS = ("st2si",)
ST2SI_DEFAULTS = {
    "max_items": 50,
    "max_item_tokens": 32,
    "max_length": None,
    "query_token": "[Q]",
    "multi_query": True,
    "alignment_instruction": "Please give the ID of the following item:",
}


def _as_lists(histories) -> list[list[int]]:
    if isinstance(histories, torch.Tensor):
        if histories.dim() != 2:
            raise ValueError("a history tensor must be [batch, length] (negative ids = padding)")
        return [[int(i) for i in row if i >= 0] for row in histories.tolist()]
    if histories and isinstance(histories[0], int):
        raise ValueError("histories must be a list of histories (lists of item ids), e.g. [[3, 17, 4]]")
    return [[int(i) for i in h] for h in histories]


class SeqRecProcessor:
    """One processor for every method; `method` picks the input format."""

    def __init__(self, tokenizer, catalog: ItemCatalog, method: str = "st2si", **settings):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
        if tokenizer is None:
            raise ValueError("SeqRecProcessor needs a tokenizer")
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.method = method
        defaults = ST2SI_DEFAULTS
        unknown = set(settings) - set(defaults)
        if unknown:
            raise ValueError(f"unknown {method} processor setting(s) {sorted(unknown)}; known: {sorted(defaults)}")
        self.settings = {**defaults, **settings}
        if self.settings["max_items"] < 1 or self.settings["max_item_tokens"] < 1:
            raise ValueError("max_items and max_item_tokens must be >= 1")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        query = self.settings["query_token"]
        if query not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens([query], special_tokens=True)
        self.query_token_id = self.tokenizer.convert_tokens_to_ids(query)
        self._item_tokens: list[list[int]] | None = None

    def __repr__(self) -> str:
        return f"SeqRecProcessor(method={self.method!r}, items={len(self.catalog)}, settings={self.settings})"

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    # -- tokens ---------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str], max_tokens: int | None) -> list[list[int]]:
        # a leading space so byte-level BPE tokenizes each text as it would mid-sentence;
        # split_special_tokens so a title containing "[Q]" cannot forge a query token
        enc = self.tokenizer(
            [" " + t for t in texts],
            add_special_tokens=False,
            truncation=max_tokens is not None,
            max_length=max_tokens,
            split_special_tokens=True,
        )
        return enc["input_ids"]

    def item_tokens(self) -> list[list[int]]:
        """Token ids of every item text (index = catalog id), cut to max_item_tokens; cached."""
        if self._item_tokens is None:
            self._item_tokens = self._tokenize(self.catalog.texts(), self.settings["max_item_tokens"])
        return self._item_tokens

    def _prefix(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    def check_histories(self, histories: list[list[int]]) -> None:
        n = self.num_items
        for row, history in enumerate(histories):
            if not history:
                raise ValueError(f"empty history in row {row}: a recommendation needs at least one interacted item")
            for item in history:
                if not 0 <= item < n:
                    raise ValueError(f"unknown item id {item} in row {row}: catalog ids run from 0 to {n - 1}")

    def window(self, history: Sequence[int]) -> list[int]:
        """The items of `history` that fit the budget: the newest, whole items only."""
        s = self.settings
        window = list(history[-s["max_items"]:])
        if s["max_length"] is not None:
            tokens = self.item_tokens()
            per_item = 1 if s["multi_query"] else 0
            used = len(self._prefix()) + (0 if s["multi_query"] else 1)
            kept = 0
            for item in reversed(window):
                cost = len(tokens[item]) + per_item
                if used + cost > s["max_length"]:
                    break
                used += cost
                kept += 1
            if kept == 0:
                raise ValueError(f"max_length={s['max_length']} cannot hold even the newest item")
            window = window[-kept:]
        return window

    def encode(self, history: Sequence[int], target: int | None = None) -> dict:
        """One row: input_ids and labels (the next item at each query, -100 where unknown) for
        the window that fits, and history_item_ids: the whole history (what exclude_history hides)."""
        window = self.window(history)
        tokens, q = self.item_tokens(), self.query_token_id
        ids = self._prefix()
        if self.settings["multi_query"]:
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

    # -- batches --------------------------------------------------------------------------------
    def __call__(
        self,
        histories,
        targets: Sequence[int] | None = None,
        return_labels: bool | None = None,
        return_tensors: str | None = "pt",
        users: Sequence[str] | None = None,
    ) -> BatchEncoding:
        """Model inputs for a batch of histories (lists of catalog ids, oldest first).

        targets: the item after each history; with it (or return_labels=True) the output has
            `labels` [batch, num_queries]: the next item at each query, -100 where unknown.
        Returns input_ids, attention_mask, history_item_ids (whole histories, -1 padded), labels.
        """
        histories = _as_lists(histories)
        self.check_histories(histories)
        if targets is not None:
            targets = [int(t) for t in targets]
            if len(targets) != len(histories):
                raise ValueError(f"{len(targets)} targets for {len(histories)} histories")
            self.check_histories([[t] for t in targets])
        rows = [self.encode(h, targets[i] if targets is not None else None) for i, h in enumerate(histories)]
        want_labels = return_labels if return_labels is not None else targets is not None
        keys = ("input_ids", "history_item_ids", "labels") if want_labels else ("input_ids", "history_item_ids")
        return self.pad({k: [r[k] for r in rows] for k in keys}, return_tensors=return_tensors)

    def alignment_inputs(self, item_ids: Sequence[int], return_tensors: str | None = "pt") -> BatchEncoding:
        """ID-alignment instructions (§3.3): "<instruction> <item text> [Q]" labelled with the item's own id."""
        item_ids = [int(i) for i in item_ids]
        self.check_histories([[i] for i in item_ids])
        instruction = self._tokenize([self.settings["alignment_instruction"]], None)[0]
        tokens = self.item_tokens()
        data = {
            "input_ids": [self._prefix() + instruction + tokens[i] + [self.query_token_id] for i in item_ids],
            "labels": [[i] for i in item_ids],
        }
        return self.pad(data, return_tensors=return_tensors)

    def pad(self, data: dict, return_tensors: str | None = "pt") -> BatchEncoding:
        """Right-pad input_ids (pad id), attention_mask, labels (-100) and history_item_ids (-1)."""
        ids = data["input_ids"]
        width = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id
        out = {
            "input_ids": [r + [pad] * (width - len(r)) for r in ids],
            "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in ids],
        }
        for key, fill in (("labels", -100), ("history_item_ids", -1)):
            if key in data:
                w = max(len(r) for r in data[key])
                out[key] = [list(r) + [fill] * (w - len(r)) for r in data[key]]
        return BatchEncoding(out, tensor_type=return_tensors)

    # -- output ---------------------------------------------------------------------------------
    def decode_items(self, item_ids) -> list:
        """Item texts for catalog ids: an int, a list, or a [batch, k] tensor / nested list (-1 -> None)."""
        if isinstance(item_ids, torch.Tensor):
            item_ids = item_ids.tolist()
        if isinstance(item_ids, int):
            return self.catalog.text(item_ids)
        return [self.decode_items(i) if isinstance(i, list) else (None if i < 0 else self.catalog.text(i)) for i in item_ids]

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        self.catalog.save_pretrained(save_directory)
        config = {"processor_class": type(self).__name__, "method": self.method, **self.settings}
        path = os.path.join(save_directory, PROCESSOR_CONFIG)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
        os.replace(path + ".tmp", path)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "SeqRecProcessor":
        """Load tokenizer, item catalog and settings from a checkpoint folder or Hub repo.

        Keyword arguments that are processor settings (max_items, ...) override the saved ones;
        the rest (revision, token, cache_dir, ...) go to the Hub download.
        """
        from transformers.utils import cached_file

        source = str(pretrained_model_name_or_path)
        if not os.path.isdir(source) and (os.path.isabs(source) or source.startswith((".", "~"))):
            raise FileNotFoundError(f"no processor in {source}: the folder does not exist")
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in ST2SI_DEFAULTS}
        kwargs.pop("_from_auto", None)
        kwargs.pop("trust_remote_code", None)
        files = {}
        for name in (PROCESSOR_CONFIG, CATALOG_FILE):
            path = cached_file(source, name, _raise_exceptions_for_missing_entries=False, **kwargs)
            if path is None:
                raise FileNotFoundError(f"no processor in {source}: expected {PROCESSOR_CONFIG} and {CATALOG_FILE}")
            files[name] = path
        with open(files[PROCESSOR_CONFIG], encoding="utf-8") as f:
            config = json.load(f)
        config.pop("processor_class", None)
        method = config.pop("method")
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        catalog = ItemCatalog.from_pretrained(os.path.dirname(files[CATALOG_FILE]))
        return cls(tokenizer, catalog, method=method, **{**config, **overrides})
