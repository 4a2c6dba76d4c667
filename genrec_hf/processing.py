"""SeqRecProcessor: tokenizer + item catalog + each method's input format, saved next to the model.

    processor = SeqRecProcessor(tokenizer, catalog, method="st2si")   # or "genrec"
    inputs = processor(histories, return_tensors="pt")      # histories: lists of catalog ids
    model(**inputs); model.recommend(**inputs, top_k=10)
    processor.decode_items(out.item_ids)                      # titles

One class serves every method; the method's input format is a small strategy object
(`ST2SIFormat`, `GenRecFormat`) with its own settings. Item texts are tokenized once and cached,
so building a batch is list concatenation. Histories are truncated from the left by whole items
(never mid-item): the last `max_items` items, then, if `max_length` is set, older items are
dropped until the tokens fit.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, BatchEncoding

from .data.catalog import CATALOG_FILE, ItemCatalog

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG = "processor_config.json"
ST2SI_DEFAULTS = {
    "max_items": 50,
    "max_item_tokens": 32,
    "max_length": None,
    "query_token": "[Q]",
    "multi_query": True,
    "alignment_instruction": "Please give the ID of the following item:",
}
GENREC_DEFAULTS = {
    "max_items": 50,
    "max_length": 512,
    "user_prefix": "user_",
    "item_prefix": "item_",
    "unknown_user": "user_unk",
    "mask_token": "<mask>",
    "item_text_ids": "random",  # "random": a seeded permutation; "original": the dataset's ids (may leak)
    "seed": 42,
    "item_numbers": None,  # catalog id -> the number in its text; filled from item_text_ids
    "users": None,  # known users (original ids); user table row = index + 1, row 0 = unknown
}
# padding value of each output key
PAD_VALUES = {"labels": -100, "history_item_ids": -1, "token_user_ids": -1, "token_item_ids": -1}


def _as_lists(histories) -> list[list[int]]:
    if isinstance(histories, torch.Tensor):
        if histories.dim() != 2:
            raise ValueError("a history tensor must be [batch, length] (negative ids = padding)")
        return [[int(i) for i in row if i >= 0] for row in histories.tolist()]
    if histories and isinstance(histories[0], int):
        raise ValueError("histories must be a list of histories (lists of item ids), e.g. [[3, 17, 4]]")
    return [[int(i) for i in h] for h in histories]


class ST2SIFormat:
    """`T_1 [Q] T_2 [Q] ... T_n [Q]` (multi-query input, ST2SI eq. 2); labels: the next item at each [Q]."""

    defaults = ST2SI_DEFAULTS
    output_keys = ("input_ids", "history_item_ids", "labels")

    def __init__(self, processor: "SeqRecProcessor"):
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


class GenRecFormat:
    """`[BEG] user_u item_a item_b ... [MASK] [END]` with per-token entity ids (GenRec eq. 1-2).

    Items are written as `item_<n>`, n from a seeded random permutation of the catalog ids by
    default: numbering items in sequence order would leak the target. labels: the masked
    item's tokens + eos.
    """

    defaults = GENREC_DEFAULTS
    output_keys = ("input_ids", "token_user_ids", "token_item_ids", "history_item_ids", "labels")

    def __init__(self, processor: "SeqRecProcessor"):
        self.p = processor
        s = processor.settings
        n = len(processor.catalog)
        if s["item_numbers"] is None:
            if s["item_text_ids"] == "random":
                s["item_numbers"] = np.random.default_rng(s["seed"]).permutation(n).tolist()
            elif s["item_text_ids"] == "original":
                logger.warning(
                    "GenRec item texts use the dataset's own item ids: if the dataset numbered items in the "
                    "order users met them, the number leaks the target (use item_text_ids='random')"
                )
                s["item_numbers"] = [str(o) for o in processor.catalog.original_ids]
            else:
                raise ValueError(f"item_text_ids must be 'random' or 'original', got {s['item_text_ids']!r}")
        if len(s["item_numbers"]) != n or len(set(map(str, s["item_numbers"]))) != n:
            raise ValueError(f"item_numbers must give each of the {n} catalog items its own number")
        s["users"] = [str(u) for u in (s["users"] or [])]
        self.user_rows = {u: i + 1 for i, u in enumerate(s["users"])}
        if len(self.user_rows) != len(s["users"]):
            raise ValueError("users must be unique")
        self.mask_token_id = processor.add_special_token(s["mask_token"])
        self._user_tokens: dict[str, list[int]] = {}

    @property
    def num_users(self) -> int:
        return len(self.user_rows)

    def item_texts(self) -> list[str]:
        prefix = self.p.settings["item_prefix"]
        return [f"{prefix}{number}" for number in self.p.settings["item_numbers"]]

    def fixed_cost(self) -> int:
        # bos, the longest user text (BPE lengths need not grow with the number), [MASK], [END]
        if not hasattr(self, "_longest_user"):
            self._longest_user = max(len(self._user_tokens_of(row)) for row in range(self.num_users + 1))
        return len(self.p.prefix()) + self._longest_user + 2

    def item_cost(self, item: int) -> int:
        return len(self.p.item_tokens()[item])

    def user_row(self, user) -> int:
        """User table row: 1.. for known users, 0 (the unknown-user row) otherwise."""
        return 0 if user is None else self.user_rows.get(str(user), 0)

    def _user_tokens_of(self, row: int) -> list[int]:
        s = self.p.settings
        text = s["unknown_user"] if row == 0 else f"{s['user_prefix']}{row}"
        if text not in self._user_tokens:
            self._user_tokens[text] = self.p.tokenize([text], None)[0]
        return self._user_tokens[text]

    def encode(self, history, target=None, user=None, mask_position=None) -> dict:
        """mask_position (index into the kept window): pretraining, that item becomes [MASK] and
        the target; None: [MASK] is appended (finetuning, inference) and `target` is the next item."""
        window = self.p.window(history)
        tokens, eos = self.p.item_tokens(), self.p.tokenizer.eos_token_id
        row = self.user_row(user)
        user_tokens = self._user_tokens_of(row)
        ids = self.p.prefix() + user_tokens
        user_ids = [-1] * len(self.p.prefix()) + [row] * len(user_tokens)
        item_ids = [-1] * len(ids)
        if mask_position is not None:
            if not -len(window) <= mask_position < len(window):
                raise ValueError(f"mask_position {mask_position} is outside the kept window of {len(window)} items")
            mask_position %= len(window)
            target = window[mask_position]
        for pos, item in enumerate(window):
            if pos == mask_position:
                piece, entity = [self.mask_token_id], -1  # the masked item keeps no ID embedding: no leak
            else:
                piece, entity = tokens[item], item
            ids.extend(piece)
            user_ids.extend([-1] * len(piece))
            item_ids.extend([entity] * len(piece))
        tail = ([self.mask_token_id] if mask_position is None else []) + ([eos] if eos is not None else [])
        ids.extend(tail)
        user_ids.extend([-1] * len(tail))
        item_ids.extend([-1] * len(tail))
        row_out = {"input_ids": ids, "token_user_ids": user_ids, "token_item_ids": item_ids, "history_item_ids": list(history)}
        row_out["labels"] = self.item_decoder_tokens(target) if target is not None else []
        return row_out

    def items_from_generated(self, sequences: torch.Tensor) -> torch.LongTensor:
        """Catalog ids of generated token sequences read as text (-1 where the text is no item).

        Catches beams that spell an item with another token split than the canonical one,
        which a trie walk would count as invalid (unconstrained decoding)."""
        if not hasattr(self, "_text_to_item"):
            self._text_to_item = {text: i for i, text in enumerate(self.item_texts())}
        texts = self.p.tokenizer.batch_decode(sequences.clamp(min=0), skip_special_tokens=True)
        return torch.tensor([self._text_to_item.get(t.strip(), -1) for t in texts], dtype=torch.long)

    def item_decoder_tokens(self, item: int) -> list[int]:
        return self.p.item_tokens()[item] + [self.p.tokenizer.eos_token_id]

    def item_token_table(self) -> torch.LongTensor:
        """[num_items, max_len] decoder tokens (+ eos) of every item, -1 padded: the model's trie."""
        rows = [self.item_decoder_tokens(i) for i in range(self.p.num_items)]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


FORMATS = {"st2si": ST2SIFormat, "genrec": GenRecFormat}
METHODS = tuple(FORMATS)


class SeqRecProcessor:
    """One processor for every method; `method` picks the input format."""

    def __init__(self, tokenizer, catalog: ItemCatalog, method: str = "st2si", **settings):
        if method not in FORMATS:
            raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
        if tokenizer is None:
            raise ValueError("SeqRecProcessor needs a tokenizer")
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.method = method
        defaults = FORMATS[method].defaults
        unknown = set(settings) - set(defaults)
        if unknown:
            raise ValueError(f"unknown {method} processor setting(s) {sorted(unknown)}; known: {sorted(defaults)}")
        self.settings = {**defaults, **settings}
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._item_tokens: list[list[int]] | None = None
        self.format = FORMATS[method](self)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.settings.items() if not isinstance(v, list)}
        return f"SeqRecProcessor(method={self.method!r}, items={len(self.catalog)}, settings={shown})"

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def query_token_id(self) -> int:
        return self.format.query_token_id  # ST2SI

    @property
    def num_users(self) -> int:
        return self.format.num_users  # GenRec

    def item_token_table(self) -> torch.LongTensor:
        return self.format.item_token_table()  # GenRec

    # -- tokens ---------------------------------------------------------------------------------
    def add_special_token(self, token: str) -> int:
        if token not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens([token], special_tokens=True)
        return self.tokenizer.convert_tokens_to_ids(token)

    def tokenize(self, texts: list[str], max_tokens: int | None) -> list[list[int]]:
        # a leading space so byte-level BPE tokenizes each text as it would mid-sentence;
        # split_special_tokens so an item text cannot forge a special token (e.g. "[Q]")
        enc = self.tokenizer(
            [" " + t for t in texts],
            add_special_tokens=False,
            truncation=max_tokens is not None,
            max_length=max_tokens,
            split_special_tokens=True,
        )
        return enc["input_ids"]

    def item_tokens(self) -> list[list[int]]:
        """Token ids of every item's text in this format (index = catalog id); cached."""
        if self._item_tokens is None:
            self._item_tokens = self.tokenize(self.format.item_texts(), self.settings.get("max_item_tokens"))
        return self._item_tokens

    def prefix(self) -> list[int]:
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
            used, kept = self.format.fixed_cost(), 0
            for item in reversed(window):
                cost = self.format.item_cost(item)
                if used + cost > s["max_length"]:
                    break
                used += cost
                kept += 1
            if kept == 0:
                raise ValueError(f"max_length={s['max_length']} cannot hold even the newest item")
            window = window[-kept:]
        return window

    def encode(self, history: Sequence[int], target: int | None = None, user=None, mask_position: int | None = None) -> dict:
        """One row of model inputs (lists): input_ids, labels and the method's extra keys, plus
        history_item_ids, the whole history (what exclude_history hides)."""
        return self.format.encode(history, target, user=user, mask_position=mask_position)

    # -- batches --------------------------------------------------------------------------------
    def __call__(
        self,
        histories,
        targets: Sequence[int] | None = None,
        users: Sequence | None = None,
        return_labels: bool | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchEncoding:
        """Model inputs for a batch of histories (lists of catalog ids, oldest first).

        targets: the item after each history; with it (or return_labels=True) the output has labels.
        users: original user ids (GenRec's user tokens; unknown or None -> the unknown-user token).
        """
        histories = _as_lists(histories)
        self.check_histories(histories)
        if targets is not None:
            targets = [int(t) for t in targets]
            if len(targets) != len(histories):
                raise ValueError(f"{len(targets)} targets for {len(histories)} histories")
            self.check_histories([[t] for t in targets])
        if isinstance(users, (str, int)):
            raise ValueError(f"users must be a list with one user per history, got {users!r}")
        if users is not None and len(users) != len(histories):
            raise ValueError(f"{len(users)} users for {len(histories)} histories")
        rows = [
            self.encode(h, targets[i] if targets is not None else None, user=users[i] if users is not None else None)
            for i, h in enumerate(histories)
        ]
        want_labels = return_labels if return_labels is not None else targets is not None
        keys = [k for k in self.format.output_keys if want_labels or k != "labels"]
        return self.pad({k: [r[k] for r in rows] for k in keys}, return_tensors=return_tensors)

    def alignment_inputs(self, item_ids: Sequence[int], return_tensors: str | None = "pt") -> BatchEncoding:
        """ST2SI ID-alignment instructions (§3.3): "<instruction> <item text> [Q]" labelled with the item's id."""
        if self.method != "st2si":
            raise ValueError("ID-alignment instructions are an ST2SI input")
        item_ids = [int(i) for i in item_ids]
        self.check_histories([[i] for i in item_ids])
        instruction = self.tokenize([self.settings["alignment_instruction"]], None)[0]
        tokens = self.item_tokens()
        data = {
            "input_ids": [self.prefix() + instruction + tokens[i] + [self.query_token_id] for i in item_ids],
            "labels": [[i] for i in item_ids],
        }
        return self.pad(data, return_tensors=return_tensors)

    def pad(self, data: dict, return_tensors: str | None = "pt") -> BatchEncoding:
        """Right-pad input_ids (pad id) and attention_mask; other keys with PAD_VALUES."""
        ids = data["input_ids"]
        width = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id
        out = {
            "input_ids": [list(r) + [pad] * (width - len(r)) for r in ids],
            "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in ids],
        }
        for key, rows in data.items():
            if key == "input_ids":
                continue
            fill = PAD_VALUES.get(key, 0)
            w = max(1, max(len(r) for r in rows))
            out[key] = [list(r) + [fill] * (w - len(r)) for r in rows]
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
        setting_names = {k for fmt in FORMATS.values() for k in fmt.defaults}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in setting_names}
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
        processor = cls(tokenizer, catalog, method=method, **{**config, **overrides})
        model_config = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False, **kwargs)
        if model_config is not None:
            processor.check_model_config(json.load(open(model_config, encoding="utf-8")), source)
        return processor

    def check_model_config(self, config: dict, where: str = "the model") -> None:
        """Fail loudly when a model's config does not fit this processor's catalog and users."""
        for key, mine in (("num_items", self.num_items), ("num_users", self.num_users if self.method == "genrec" else None)):
            theirs = config.get(key)
            if mine is not None and theirs is not None and theirs != mine:
                raise ValueError(
                    f"catalog size mismatch: {where} has {key}={theirs} but the processor's "
                    f"{'catalog' if key == 'num_items' else 'user list'} has {mine}"
                )
