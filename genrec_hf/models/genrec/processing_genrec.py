"""GenRec's input format and processor: `[BEG] user_u item_a item_b ... [MASK] [END]` with the
entity (user or item row) of every token (eq. 1-2).

    processor = GenRecProcessor(tokenizer, catalog, users=train_users)   # = SeqRecProcessor(..., method="genrec")
    inputs = processor(histories, users=users)
    model.set_item_tokens(processor.item_token_table())                   # the catalog trie

The shared machinery is `processing_base.py` and `catalog.py` (symlinks to `genrec_hf/data/`), so
a saved folder carries the processor's code and loads with `AutoProcessor` as Hub remote code.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .processing_base import SeqRecProcessorBase

logger = logging.getLogger(__name__)

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


class GenRecFormat:
    """`[BEG] user_u item_a item_b ... [MASK] [END]` with per-token entity ids (GenRec eq. 1-2).

    Items are written as `item_<n>`, n from a seeded random permutation of the catalog ids by
    default: numbering items in sequence order would leak the target. labels: the masked
    item's tokens + eos.
    """

    defaults = GENREC_DEFAULTS
    output_keys = ("input_ids", "token_user_ids", "token_item_ids", "history_item_ids", "labels")

    def __init__(self, processor: "GenRecProcessor"):
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


class GenRecProcessor(SeqRecProcessorBase):
    """Tokenizer + item catalog + known users -> GenRec inputs (input_ids, attention_mask,
    token_user_ids, token_item_ids, history_item_ids, labels)."""

    method = "genrec"
    format_class = GenRecFormat

    @property
    def num_users(self) -> int:
        return self.format.num_users

    def item_token_table(self) -> torch.LongTensor:
        return self.format.item_token_table()


GenRecProcessor.register_for_auto_class()

__all__ = ["GENREC_DEFAULTS", "GenRecFormat", "GenRecProcessor"]
