"""The method-independent half of every genrec_hf processor: tokenizer + item catalog + settings.

`SeqRecProcessorBase` tokenizes item texts once and caches them, truncates histories by whole
items, pads batches, decodes item ids to titles, saves and loads itself. Each method subclasses
it next to its model (`models/<method>/processing_<method>.py`) and names its input format, a
small strategy object with its own settings that writes one row of model inputs.

Self-contained (torch, transformers and the same-folder `catalog.py`): every model folder holds a
symlink to this file and to `data/catalog.py`, so `save_pretrained` copies the processor's code
next to the weights (`processor_config.json` gets an `auto_map` entry for `AutoProcessor`) and
`AutoProcessor.from_pretrained(folder_or_hub_id, trust_remote_code=True)` works where genrec_hf is
not installed. Each folder imports its own copy of this module: compare processors and catalogs
by behaviour, never with `isinstance` across folders.
"""

from __future__ import annotations

import json
import numbers
import os
from typing import Sequence

import torch
from transformers import AutoTokenizer, BatchEncoding
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import cached_file

from .catalog import CATALOG_FILE, ItemCatalog

PROCESSOR_CONFIG = "processor_config.json"
# padding value of each output key
PAD_VALUES = {"labels": -100, "history_item_ids": -1, "token_user_ids": -1, "token_item_ids": -1}
# from_pretrained keyword arguments that locate files (the rest are processor settings)
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def _item_id(item, row: int) -> int:
    """An integer catalog id as int; anything else (1.5, "3", True) is refused, not truncated."""
    if isinstance(item, torch.Tensor) and item.dim() == 0 and not (item.is_floating_point() or item.dtype == torch.bool):
        return int(item)
    if isinstance(item, bool) or not isinstance(item, numbers.Integral):
        raise ValueError(f"item id {item!r} in row {row} is not an integer catalog id "
                         "(map the dataset's own ids with processor.catalog first)")
    return int(item)


def _as_lists(histories) -> list[list[int]]:
    if isinstance(histories, torch.Tensor):
        if histories.dim() != 2:
            raise ValueError("a history tensor must be [batch, length] (negative ids = padding)")
        if histories.is_floating_point() or histories.dtype == torch.bool:
            raise ValueError(f"a history tensor must hold integer item ids, got dtype {histories.dtype}")
        return [[int(i) for i in row if i >= 0] for row in histories.tolist()]
    if isinstance(histories, (str, bytes)) or (histories and isinstance(histories[0], (numbers.Number, torch.Tensor))
                                               and not (isinstance(histories[0], torch.Tensor) and histories[0].dim())):
        raise ValueError("histories must be a list of histories (lists of item ids), e.g. [[3, 17, 4]]")
    out = []
    for row, history in enumerate(histories):
        if isinstance(history, (str, bytes, dict)) or not hasattr(history, "__iter__"):
            raise ValueError(f"the history in row {row} must be a list of item ids, got {history!r}")
        out.append([_item_id(item, row) for item in history])
    return out


def load_processor_config(source: str | os.PathLike, **kwargs) -> tuple[dict, str]:
    """(processor_config.json as a dict, the local path of the item catalog) of a folder or Hub repo.

    kwargs: Hub options (revision, token, cache_dir, ...); other keys are ignored here."""
    source = str(source)
    if not os.path.isdir(source) and (os.path.isabs(source) or source.startswith((".", "~"))):
        raise FileNotFoundError(f"no processor in {source}: the folder does not exist")
    hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    files = {}
    for name in (PROCESSOR_CONFIG, CATALOG_FILE):
        files[name] = cached_file(source, name, _raise_exceptions_for_missing_entries=False, **hub)
        if files[name] is None:
            raise FileNotFoundError(f"no processor in {source}: expected {PROCESSOR_CONFIG} and {CATALOG_FILE}")
    with open(files[PROCESSOR_CONFIG], encoding="utf-8") as f:
        return json.load(f), files[CATALOG_FILE]


class SeqRecProcessorBase:
    """What every method's processor shares. Subclasses set `method` and `format_class` (whose
    `defaults` are the method's settings) and add the method's own accessors."""

    method: str = ""
    format_class: type = type(None)
    _auto_class: str | None = None

    def __init__(self, tokenizer, catalog: ItemCatalog, **settings):
        uses_tokenizer = getattr(self.format_class, "uses_tokenizer", True)
        if tokenizer is None and uses_tokenizer:
            raise ValueError(f"{type(self).__name__} needs a tokenizer")
        self.tokenizer = tokenizer
        self.catalog = catalog
        defaults = self.format_class.defaults
        unknown = set(settings) - set(defaults)
        if unknown:
            raise ValueError(f"unknown {self.method} processor setting(s) {sorted(unknown)}; known: {sorted(defaults)}")
        self.settings = {**defaults, **settings}
        if self.tokenizer is not None and self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._item_tokens: list[list[int]] | None = None
        self.format = self.format_class(self)

    def __repr__(self) -> str:
        # tables (item lists, templates, user features) would flood the line
        shown = {k: v for k, v in self.settings.items() if not isinstance(v, (list, dict)) or len(repr(v)) <= 120}
        return f"{type(self).__name__}(method={self.method!r}, items={len(self.catalog)}, settings={shown})"

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Save this class's code with the processor and name it in `auto_map` (Hub remote code)."""
        cls._auto_class = auto_class if isinstance(auto_class, str) else auto_class.__name__

    @property
    def num_items(self) -> int:
        return len(self.catalog)

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
                _item_id(item, row)  # targets come here unconverted
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
            targets = [_item_id(t, row) for row, t in enumerate(targets)]
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
        training_keys = getattr(self.format, "training_keys", ("labels",))
        keys = [k for k in self.format.output_keys if want_labels or k not in training_keys]
        return self.pad({k: [r[k] for r in rows] for k in keys}, return_tensors=return_tensors)

    def pad(self, data: dict, return_tensors: str | None = "pt") -> BatchEncoding:
        """Right-pad input_ids (pad id) and attention_mask; other keys with PAD_VALUES."""
        ids = data["input_ids"]
        width = max(len(r) for r in ids)
        # item-id formats (no tokenizer) name their own padding id
        pad = getattr(self.format, "pad_id", None) if self.tokenizer is None else self.tokenizer.pad_token_id
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
        """Tokenizer, item catalog and settings; with `register_for_auto_class` (every method's
        processor calls it), also this class's `.py` files and an `AutoProcessor` auto_map entry."""
        os.makedirs(save_directory, exist_ok=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)
        self.catalog.save_pretrained(save_directory)
        config = {"processor_class": type(self).__name__, "method": self.method, **self.settings}
        if self._auto_class is not None:
            custom_object_save(self, save_directory, config=config)  # the module and its relative imports
        path = os.path.join(save_directory, PROCESSOR_CONFIG)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
        os.replace(path + ".tmp", path)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load tokenizer, item catalog and settings from a checkpoint folder or Hub repo.

        Keyword arguments that are processor settings (max_items, ...) override the saved ones;
        Hub options (revision, token, cache_dir, ...) go to the download.
        """
        source = str(pretrained_model_name_or_path)
        trust_remote_code = kwargs.pop("trust_remote_code", None)
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}  # _from_auto and the like
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in cls.format_class.defaults}
        unknown = sorted(set(kwargs) - set(HUB_KWARGS))
        if unknown:
            raise ValueError(f"unknown {cls.method} processor setting(s) {unknown}; known: {sorted(cls.format_class.defaults)}")
        config, catalog_path = load_processor_config(source, **kwargs)
        method = config.pop("method", cls.method)
        if method != cls.method:
            raise ValueError(f"{source} holds a {method} processor, not {cls.method}: load it with SeqRecProcessor.from_pretrained")
        for key in ("processor_class", "auto_map"):
            config.pop(key, None)
        # the user's answer goes on to the tokenizer: the folder's config.json names a remote-code model
        tokenizer = (AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
                     if getattr(cls.format_class, "uses_tokenizer", True) else None)
        catalog = ItemCatalog.from_pretrained(os.path.dirname(catalog_path))
        processor = cls(tokenizer, catalog, **{**config, **overrides})
        model_config = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False, **kwargs)
        if model_config is not None:
            with open(model_config, encoding="utf-8") as f:
                processor.check_model_config(json.load(f), source)
        return processor

    def check_model_config(self, config: dict, where: str = "the model") -> None:
        """Fail loudly when a model's config does not fit this processor's catalog and users."""
        for key, mine in (("num_items", self.num_items), ("num_users", getattr(self.format, "num_users", None))):
            theirs = config.get(key)
            if mine is not None and theirs is not None and theirs != mine:
                raise ValueError(
                    f"catalog size mismatch: {where} has {key}={theirs} but the processor's "
                    f"{'catalog' if key == 'num_items' else 'user list'} has {mine}"
                )
