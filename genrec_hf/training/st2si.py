"""ST2SI training data for an unchanged HF `Trainer`.

Training windows per user (`windows=`):
- "random" (default, the official code's sampling): every time a user's row is read, a fresh
  seeded span is drawn: start ~ U[0, n-2], target ~ U[start+1, n-1], the input is the (at most
  max_items) items before the target from start on. Over the epochs every transition is trained.
- "last": only the newest window; "all": consecutive windows covering every transition once;
  N: the newest N windows (fixed rows, the same every epoch).

Full tuning: tokenized multi-query rows (+ ID-alignment rows) and `SeqRecCollator`.
ILP tuning (frozen backbone): the backbone's states at the query positions are computed once
and the Trainer fits the ILP on them (`ilp_feature_datasets`). With random windows the states of
a drawn window are computed when it is first drawn and cached by its start (see
`RandomWindowStates`).
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..processing import SeqRecProcessor
from .draws import EpochDraws


class SeqRecCollator:
    """Pads tokenized rows (input_ids, labels, history_item_ids) with the processor's rules."""

    def __init__(self, processor: SeqRecProcessor):
        self.processor = processor

    def __call__(self, features: list[dict]) -> dict:
        keys = [k for k in ("input_ids", "labels", "history_item_ids") if k in features[0]]
        for row, f in enumerate(features):  # keys come from row 0: another row's extra labels would be dropped
            for k in ("labels", "history_item_ids"):
                if (k in f) != (k in keys):
                    raise ValueError(f"row {row if k in keys else 0} has no {k!r} while other rows of the batch do: "
                                     "every row needs the same keys")
        return dict(self.processor.pad({k: [list(f[k]) for f in features] for k in keys}, return_tensors="pt"))


WINDOW_CHOICES = "'random', 'last', 'all' or a positive number"


def check_windows(windows) -> str | int:
    if windows in ("random", "last", "all"):
        return windows
    if isinstance(windows, str) and windows.isdigit() and int(windows) >= 1:
        return int(windows)
    if isinstance(windows, int) and not isinstance(windows, bool) and windows >= 1:
        return windows
    raise ValueError(f"windows must be {WINDOW_CHOICES}, got {windows!r}")


def draw_training_span(sequence: Sequence[int], max_items: int, rng: random.Random) -> tuple[int, int]:
    """One training sample as the official ST2SI code draws it: (first input position, target position).

    start ~ U[0, n-2], target ~ U[start+1, n-1]; the input is sequence[max(start, target - max_items):target].
    """
    n = len(sequence)
    if n < 2:
        raise ValueError("a training span needs a sequence of at least two items")
    start = rng.randint(0, n - 2)
    target = rng.randint(start + 1, n - 1)
    return max(start, target - max_items), target


def training_windows(sequence: Sequence[int], max_items: int, windows: str | int = "last") -> list[tuple[list[int], int | None]]:
    """Chunks of a training sequence for multi-query rows, oldest first, each with the item that
    follows it (None for the newest chunk: what follows is the validation target).

    "last" (= 1): the newest `max_items` items, one row per user.
    "all": consecutive chunks from the newest backwards; with the following item as the last
    query's label, every transition of the sequence is trained on once.
    An int N: the newest N such chunks (a budget between the two).
    """
    windows = check_windows(windows)
    if windows == "random":
        raise ValueError("random windows are drawn per epoch: use RandomWindowRows / RandomWindowStates")
    if windows == "last":
        windows = 1
    elif windows == "all":
        windows = len(sequence)
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


class RandomWindowRows(EpochDraws, torch.utils.data.Dataset):
    """Training rows with a fresh random span per user every time the row is read (windows="random").

    One row per user with at least two training items, then `fixed_rows` (e.g. ID-alignment
    instructions) unchanged. User row i draws its span (`draw_training_span`) in epoch e from a
    generator seeded by (seed, i, e): each epoch gets new spans, the same for the same seed
    whatever order the sampler reads them in, through the unchanged Trainer and `SeqRecCollator`.
    The draws are `EpochDraws` keyed by the row index, so a run resumed from a checkpoint, and
    every data-parallel rank, draw the spans one uninterrupted process would. Draws happen in the
    main process (`dataloader_num_workers=0`; workers are refused).
    """

    def __init__(self, processor: SeqRecProcessor, sequences: Sequence[Sequence[int]], fixed_rows: Sequence[dict] = (), seed: int = 0):
        super().__init__(seed)
        self.processor = processor
        self.sequences = [list(seq) for seq in sequences if len(seq) >= 2]
        self.fixed_rows = list(fixed_rows)

    def __len__(self) -> int:
        return len(self.sequences) + len(self.fixed_rows)

    def draw(self, index: int) -> tuple[list[int], int, int]:
        """(input items, target item, first input position) of a fresh span for user row `index`."""
        if torch.utils.data.get_worker_info() is not None:
            # each worker process would count reads on its own copy and replay the same draws
            raise RuntimeError("random training windows are drawn in the main process: set dataloader_num_workers=0")
        seq = self.sequences[index]
        first, target = draw_training_span(seq, self.processor.settings["max_items"], self.rng(index))
        return seq[first:target], seq[target], first

    def __getitem__(self, index: int) -> dict:
        if index >= len(self.sequences):
            return self.fixed_rows[index - len(self.sequences)]
        items, target, _ = self.draw(index)
        row = self.processor.encode(items, target)
        return {"input_ids": row["input_ids"], "labels": row["labels"]}


class RandomWindowStates(RandomWindowRows):
    """`RandomWindowRows` as backbone states at the queries, for ILP tuning with a frozen backbone.

    A row is `query_hidden_states` [num_queries, hidden] with `labels` [num_queries]; pad batches
    with `QueryStateCollator`. The Trainer's DataLoader asks for a whole batch at once
    (`__getitems__`), so the windows of a batch that are not cached yet run through the backbone
    together. Cache: in a causal LM the states of a window depend only on its own items, so one
    pass over the `max_items` items from a start gives the states of every window that starts
    there (a prefix of that pass); passes are cached by (user, start) and reused across epochs.
    The single-query ablation has no intermediate queries: its windows are cached whole.
    Memory: one [max_items, hidden] float32 pass per distinct (user, start) drawn, about one new
    pass per user and epoch (ml-100k, 50 epochs, SmolLM2 and max_items 50: ~5 GB); past
    `cache_gb` new passes are computed and used but not kept.
    """

    def __init__(self, model, processor: SeqRecProcessor, sequences, fixed_states: Sequence[tuple[torch.Tensor, int]] = (),
                 seed: int = 0, batch_size: int = 16, cache_gb: float = 4.0):
        super().__init__(processor, sequences, seed=seed)
        self.model = model
        self.fixed_rows = [{"query_hidden_states": state.reshape(1, -1), "labels": torch.tensor([label])} for state, label in fixed_states]
        self.batch_size = batch_size
        self.cache: dict[tuple, torch.Tensor] = {}
        self.cache_bytes, self.cache_limit = 0, int(cache_gb * 2**30)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        p, max_items = self.processor, self.processor.settings["max_items"]
        plans, missing = [], {}
        for index in indices:
            if index >= len(self.sequences):
                plans.append((index, None, None, None))
                continue
            items, target, first = self.draw(index)
            labels = p.encode(items, target)["labels"]
            seq = self.sequences[index]
            span = seq[first:first + max_items]
            # a prefix of the cached pass only when the processor keeps every item of both
            shared = p.settings["multi_query"] and len(p.window(span)) == len(span) and len(p.window(items)) == len(items)
            key = (index, first) if shared else (index, first, target)
            if key not in self.cache and key not in missing:
                missing[key] = p.encode(span if shared else items)
            plans.append((index, key, labels, len(labels)))
        fresh = {}
        if missing:
            keys = list(missing)
            fresh = dict(zip(keys, extract_query_states(self.model, p, [missing[k] for k in keys], batch_size=self.batch_size,
                                                        progress=False)))
            for key, states in fresh.items():
                if self.cache_bytes + states.nbytes <= self.cache_limit:
                    self.cache[key] = states
                    self.cache_bytes += states.nbytes
        rows = []
        for index, key, labels, count in plans:
            if key is None:
                rows.append(self.fixed_rows[index - len(self.sequences)])
            else:
                states = self.cache[key] if key in self.cache else fresh[key]
                rows.append({"query_hidden_states": states[:count], "labels": torch.tensor(labels)})
        return rows


class QueryStateCollator:
    """Pads rows of query states [num_queries, hidden] (+ labels) into [batch, max_queries, hidden],
    `query_mask` and labels (-100 on padding)."""

    def __call__(self, features: list[dict]) -> dict:
        # a 1-D row is one query (the validation set of `ilp_feature_datasets`): [hidden] -> [1, hidden]
        states = [torch.atleast_2d(torch.as_tensor(f["query_hidden_states"])) for f in features]
        for row, (s, f) in enumerate(zip(states, features)):  # torch would broadcast one label or one feature
            count = torch.as_tensor(f["labels"]).numel()
            if count != s.shape[0]:
                raise ValueError(f"row {row} has {count} label{'s' * (count != 1)} for {s.shape[0]} query states")
            if s.shape[-1] != states[0].shape[-1]:
                raise ValueError(f"query states of hidden size {s.shape[-1]} in row {row}, {states[0].shape[-1]} in row 0")
        width = max(s.shape[0] for s in states)
        batch = torch.zeros(len(states), width, states[0].shape[-1], dtype=states[0].dtype)
        mask = torch.zeros(len(states), width, dtype=torch.bool)
        labels = torch.full((len(states), width), -100, dtype=torch.long)
        for i, (s, f) in enumerate(zip(states, features)):
            batch[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
            labels[i, : s.shape[0]] = torch.as_tensor(f["labels"]).reshape(-1)
        return {"query_hidden_states": batch, "query_mask": mask, "labels": labels}


def st2si_datasets(
    processor: SeqRecProcessor,
    data,
    id_alignment: bool = True,
    windows: str | int = "random",
    limit_users: int | None = None,
    seed: int = 0,
) -> tuple[Dataset | RandomWindowRows, Dataset]:
    """(train, validation) datasets of tokenized rows for full tuning (pad with `SeqRecCollator`)."""
    windows = check_windows(windows)
    train_split, valid_split = data.train_valid(limit_users)
    fixed = alignment_rows(processor) if id_alignment else []
    if windows == "random":
        train = RandomWindowRows(processor, train_split["items"], fixed_rows=fixed, seed=seed)
    else:
        rows = sequence_rows(processor, train_split["items"], windows) + fixed
        train = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    valid = Dataset.from_list(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in evaluation_rows(processor, valid_split)]
    )
    return train, valid


@torch.no_grad()
def _states_by_length(model, processor: SeqRecProcessor, rows: list[dict], per_batch, batch_size: int, desc: str,
                      progress: bool) -> list[torch.Tensor]:
    """`per_batch(input_ids, attention_mask)` -> one tensor per row, over rows batched by length
    (less padding, much faster on CPU), returned in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list[torch.Tensor | None] = [None] * len(rows)
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    # the bar counts padded tokens, not batches: batches grow along the length order, so a
    # per-batch bar would promise an ETA several times too short
    cost = [len(idx) * len(rows[idx[-1]]["input_ids"]) for idx in batches]
    bar = tqdm(total=sum(cost), desc=desc, disable=not progress, unit="tok", unit_scale=True)
    for idx, batch_cost in zip(batches, cost):
        batch = processor.pad({"input_ids": [rows[i]["input_ids"] for i in idx]}, return_tensors="pt").to(device)
        for i, state in zip(idx, per_batch(batch["input_ids"], batch["attention_mask"])):
            out[i] = state
        bar.update(batch_cost)
    bar.close()
    model.train(was_training)
    return out


def extract_query_states(
    model, processor: SeqRecProcessor, rows: list[dict], batch_size: int = 16, desc: str = "backbone states", progress: bool = True
) -> list[torch.Tensor]:
    """Backbone states at every query of every row: a list of [num_queries_i, hidden] tensors."""
    def per_batch(input_ids, attention_mask):
        states, mask = model.encode_queries(input_ids, attention_mask)
        return [states[j, mask[j]].float().cpu() for j in range(len(states))]

    return _states_by_length(model, processor, rows, per_batch, batch_size, desc, progress)


def extract_lower_states(
    model, processor: SeqRecProcessor, rows: list[dict], batch_size: int = 16, desc: str = "frozen lower layers", progress: bool = True
) -> list[torch.Tensor]:
    """Top-k tuning: the states entering the first tuned layer at every token of every row, a list
    of [length_i, hidden] tensors (the frozen embeddings and lower layers run once, here)."""
    def per_batch(input_ids, attention_mask):
        states = model.lower_hidden_states(input_ids, attention_mask)
        lengths = attention_mask.sum(dim=1).tolist()
        return [states[j, :n].cpu().clone() for j, n in enumerate(lengths)]

    return _states_by_length(model, processor, rows, per_batch, batch_size, desc, progress)


class LowerStateCollator:
    """Pads token rows (input_ids, labels) with the processor's rules and their lower-layer states
    [length, hidden] with zeros into `lower_hidden_states` [batch, seq, hidden] (top-k tuning)."""

    def __init__(self, processor: SeqRecProcessor):
        self.processor = processor

    def __call__(self, features: list[dict]) -> dict:
        batch = dict(self.processor.pad({k: [list(f[k]) for f in features] for k in ("input_ids", "labels")}, return_tensors="pt"))
        states = [f["lower_hidden_states"] for f in features]
        for row, (state, f) in enumerate(zip(states, features)):  # torch would zero-fill or broadcast silently
            if state.shape[0] != len(f["input_ids"]):
                raise ValueError(f"row {row} has lower_hidden_states for {state.shape[0]} tokens but {len(f['input_ids'])} input_ids")
            if state.shape[-1] != states[0].shape[-1]:
                raise ValueError(f"lower_hidden_states of hidden size {state.shape[-1]} in row {row}, {states[0].shape[-1]} in row 0")
        padded = torch.zeros(len(states), batch["input_ids"].shape[1], states[0].shape[-1], dtype=states[0].dtype)
        for i, state in enumerate(states):
            padded[i, : state.shape[0]] = state
        batch["lower_hidden_states"] = padded
        return batch


def lower_state_datasets(
    model,
    processor: SeqRecProcessor,
    data,
    id_alignment: bool = True,
    windows: str | int = "all",
    batch_size: int = 16,
    limit_users: int | None = None,
    progress: bool = True,
) -> tuple[list[dict], list[dict]]:
    """(train, validation) rows for top-k tuning: tokenized multi-query rows (+ ID-alignment rows)
    with `lower_hidden_states`, the frozen lower part's output, computed once per distinct text
    (a user's validation row is their newest training window). Pad with `LowerStateCollator`.

    Memory: one float32 [tokens, hidden] tensor per distinct row (ml-100k, SmolLM2, max_items 20,
    2 windows: about 1 GB)."""
    if model.config.tune_mode != "top_k":
        raise ValueError("lower-layer states are for tune_mode='top_k' (frozen lower layers)")
    windows = check_windows(windows)
    if windows == "random":
        raise ValueError("top-k tuning computes the frozen layers once per window, so it needs fixed windows: "
                         "'last', 'all' or a number N (not 'random')")
    train_split, valid_split = data.train_valid(limit_users)
    train_rows = sequence_rows(processor, train_split["items"], windows) + (alignment_rows(processor) if id_alignment else [])
    valid_rows = evaluation_rows(processor, valid_split)
    index, unique_rows = _distinct_texts(train_rows + valid_rows)
    states = extract_lower_states(model, processor, unique_rows, batch_size=batch_size, progress=progress)

    def with_states(rows):
        return [{"input_ids": r["input_ids"], "labels": r["labels"], "lower_hidden_states": states[index[tuple(r["input_ids"])]]}
                for r in rows]

    return with_states(train_rows), with_states(valid_rows)


def _distinct_texts(rows: list[dict]) -> tuple[dict[tuple, int], list[dict]]:
    """({input_ids: position in the distinct rows}, the distinct rows): rows with the same text
    share one backbone pass (a user's validation row is their newest training window)."""
    index: dict[tuple, int] = {}
    distinct = []
    for row in rows:
        key = tuple(row["input_ids"])
        if key not in index:
            index[key] = len(distinct)
            distinct.append(row)
    return index, distinct


def _feature_dataset(states: list[torch.Tensor], labels: list[int]) -> Dataset:
    array = torch.stack(states).numpy().astype(np.float32) if states else np.zeros((0, 0), np.float32)
    return Dataset.from_dict({"query_hidden_states": array, "labels": labels}).with_format("torch")


def ilp_feature_datasets(
    model,
    processor: SeqRecProcessor,
    data,
    id_alignment: bool = True,
    windows: str | int = "random",
    batch_size: int = 16,
    limit_users: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> tuple[Dataset | RandomWindowStates, Dataset]:
    """(train, validation) datasets of backbone query states for ILP-only tuning.

    Fixed windows: each example is one query, `query_hidden_states` [hidden] and its next-item
    label, all computed here. Rows with the same text are encoded once: with multi-query input,
    a user's validation row is their (last) training window, whose final query has no training
    label, so validation states cost nothing extra.
    Random windows: a `RandomWindowStates` (pad with `QueryStateCollator`) whose states are
    computed as windows are drawn; ID-alignment and validation states are computed here.
    """
    if model.config.tune_mode != "ilp":
        raise ValueError("precomputed states are for tune_mode='ilp' only: a trained backbone changes them")
    windows = check_windows(windows)
    train_split, valid_split = data.train_valid(limit_users)
    train_rows = [] if windows == "random" else sequence_rows(processor, train_split["items"], windows)
    if id_alignment:
        train_rows += alignment_rows(processor)
    valid_rows = [processor.encode(history) for history in valid_split["history"]]
    index, unique_rows = _distinct_texts(train_rows + valid_rows)
    states = extract_query_states(model, processor, unique_rows, batch_size=batch_size, progress=progress)
    train_states, train_labels = [], []
    for row in train_rows:
        for state, label in zip(states[index[tuple(row["input_ids"])]], row["labels"]):
            if label != -100:
                train_states.append(state)
                train_labels.append(label)
    valid_states = [states[index[tuple(row["input_ids"])]][-1] for row in valid_rows]
    valid = _feature_dataset(valid_states, list(valid_split["target"]))
    if windows == "random":
        train = RandomWindowStates(model, processor, train_split["items"], list(zip(train_states, train_labels)),
                                   seed=seed, batch_size=batch_size)
        return train, valid
    return _feature_dataset(train_states, train_labels), valid
