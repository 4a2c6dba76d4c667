"""ST2SI training data for an unchanged HF `Trainer`.

Full tuning: tokenized multi-query rows (+ ID-alignment rows) and `SeqRecCollator`.
ILP tuning (frozen backbone): the backbone's states at the query positions are computed once
(`extract_query_states`) and the Trainer fits the ILP on them for every epoch
(`ilp_feature_datasets`); the validation states come free with the training pass, because the
validation history is exactly the training sequence.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..processing import SeqRecProcessor


class SeqRecCollator:
    """Pads tokenized rows (input_ids, labels, history_item_ids) with the processor's rules."""

    def __init__(self, processor: SeqRecProcessor):
        self.processor = processor

    def __call__(self, features: list[dict]) -> dict:
        keys = [k for k in ("input_ids", "labels", "history_item_ids") if k in features[0]]
        return dict(self.processor.pad({k: [list(f[k]) for f in features] for k in keys}, return_tensors="pt"))


def training_windows(sequence: Sequence[int], max_items: int, windows: str | int = "last") -> list[tuple[list[int], int | None]]:
    """Chunks of a training sequence for multi-query rows, oldest first, each with the item that
    follows it (None for the newest chunk: what follows is the validation target).

    "last" (= 1): the newest `max_items` items, one row per user (the paper's setting).
    "all": consecutive chunks from the newest backwards; with the following item as the last
    query's label, every transition of the sequence is trained on once.
    An int N: the newest N such chunks (a budget between the two).
    """
    if windows == "last":
        windows = 1
    elif windows == "all":
        windows = len(sequence)
    elif isinstance(windows, str) and windows.isdigit():
        windows = int(windows)
    if not isinstance(windows, int) or windows < 1:
        raise ValueError(f"windows must be 'last', 'all' or a positive number, got {windows!r}")
    chunks, end = [], len(sequence)
    while end > 0 and len(chunks) < windows:
        following = sequence[end] if end < len(sequence) else None
        chunks.append((list(sequence[max(0, end - max_items):end]), following))
        end -= max_items
    return chunks[::-1]


def sequence_rows(processor: SeqRecProcessor, sequences: Sequence[Sequence[int]], windows: str | int = "last") -> list[dict]:
    """Training rows from training sequences.

    Multi-query: one row per window, a label at every query (the last one: the item after the
    window, if the sequence goes on). Without multi-query (the ablation) one row per prefix of
    the window, labelled with the item that follows it. Rows without any label are skipped.
    """
    multi_query = processor.settings["multi_query"]
    rows = []
    for seq in sequences:
        for chunk, following in training_windows(seq, processor.settings["max_items"], windows):
            if multi_query:
                row = processor.encode(chunk, following)
                if any(label != -100 for label in row["labels"]):
                    rows.append(row)
            else:
                full = chunk + ([following] if following is not None else [])
                rows.extend(processor.encode(full[:j], full[j]) for j in range(1, len(full)))
    return rows


def alignment_rows(processor: SeqRecProcessor, item_ids: Sequence[int] | None = None) -> list[dict]:
    """One ID-alignment instruction per item (all catalog items by default)."""
    item_ids = range(processor.num_items) if item_ids is None else item_ids
    enc = processor.alignment_inputs(list(item_ids), return_tensors=None)
    return [
        {"input_ids": [t for t, m in zip(ids, mask) if m], "labels": labels}
        for ids, mask, labels in zip(enc["input_ids"], enc["attention_mask"], enc["labels"])
    ]


def evaluation_rows(processor: SeqRecProcessor, split) -> list[dict]:
    """Rows for a validation/test split: only the last query is labelled (with the target),
    so Trainer's eval averages per user."""
    rows = []
    for history, target in zip(split["history"], split["target"]):
        row = processor.encode(history, target)
        row["labels"] = [-100] * (len(row["labels"]) - 1) + [row["labels"][-1]]
        rows.append(row)
    return rows


def st2si_datasets(
    processor: SeqRecProcessor,
    data,
    id_alignment: bool = True,
    windows: str = "last",
    limit_users: int | None = None,
) -> tuple[Dataset, Dataset]:
    """(train, validation) `datasets.Dataset`s of tokenized rows for full tuning."""
    train_split, valid_split = data.train_valid(limit_users)
    rows = sequence_rows(processor, train_split["items"], windows)
    if id_alignment:
        rows += alignment_rows(processor)
    train = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    valid = Dataset.from_list(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in evaluation_rows(processor, valid_split)]
    )
    return train, valid


@torch.no_grad()
def extract_query_states(
    model, processor: SeqRecProcessor, rows: list[dict], batch_size: int = 16, desc: str = "backbone states", progress: bool = True
) -> list[torch.Tensor]:
    """Backbone states at every query of every row: a list of [num_queries_i, hidden] tensors.

    Rows are batched by length (less padding, much faster on CPU) and returned in input order.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list[torch.Tensor | None] = [None] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, unit="batch"):
        idx = order[start:start + batch_size]
        batch = processor.pad({"input_ids": [rows[i]["input_ids"] for i in idx]}, return_tensors="pt").to(device)
        states, mask = model.encode_queries(batch["input_ids"], batch["attention_mask"])
        for j, i in enumerate(idx):
            out[i] = states[j, mask[j]].float().cpu()
    model.train(was_training)
    return out


def _feature_dataset(states: list[torch.Tensor], labels: list[int]) -> Dataset:
    array = torch.stack(states).numpy().astype(np.float32) if states else np.zeros((0, 0), np.float32)
    return Dataset.from_dict({"query_hidden_states": array, "labels": labels}).with_format("torch")


def ilp_feature_datasets(
    model,
    processor: SeqRecProcessor,
    data,
    id_alignment: bool = True,
    windows: str = "last",
    batch_size: int = 16,
    limit_users: int | None = None,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets of precomputed query states for ILP-only tuning.

    Each example is one query: `query_hidden_states` [hidden] and its next-item label. Rows
    with the same text are encoded once: with multi-query input, a user's validation row is
    their (last) training window, whose final query has no training label, so validation
    states cost nothing extra.
    """
    if model.config.tune_mode != "ilp":
        raise ValueError("precomputed states are for tune_mode='ilp' only: a trained backbone changes them")
    train_split, valid_split = data.train_valid(limit_users)
    train_rows = sequence_rows(processor, train_split["items"], windows)
    if id_alignment:
        train_rows += alignment_rows(processor)
    valid_rows = [processor.encode(history) for history in valid_split["history"]]
    index: dict[tuple, int] = {}
    unique_rows = []
    for row in train_rows + valid_rows:
        key = tuple(row["input_ids"])
        if key not in index:
            index[key] = len(unique_rows)
            unique_rows.append(row)
    states = extract_query_states(model, processor, unique_rows, batch_size=batch_size, progress=progress)
    train_states, train_labels = [], []
    for row in train_rows:
        for state, label in zip(states[index[tuple(row["input_ids"])]], row["labels"]):
            if label != -100:
                train_states.append(state)
                train_labels.append(label)
    valid_states = [states[index[tuple(row["input_ids"])]][-1] for row in valid_rows]
    return _feature_dataset(train_states, train_labels), _feature_dataset(valid_states, list(valid_split["target"]))
