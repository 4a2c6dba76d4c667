"""From raw interactions to user sequences and the leave-one-out splits of design.md §3."""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .catalog import ItemCatalog
from .sources import (
    Column,
    merge_equal_labels,
    RawInteractions,
    read_amazon,
    read_interaction_table,
    read_ml1m,
    read_p5,
    read_recbole_atomic,
    recbole_ml100k_dir,
)

if TYPE_CHECKING:  # `datasets` is imported where Datasets are built: importing genrec_hf.data stays light
    from datasets import DatasetDict

logger = logging.getLogger(__name__)

MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs one training item, a validation and a test target
DEFAULT_K_CORE = {"ml-100k": 0, "ml-1m": 0}
FORMATS = ("ml-100k", "recbole", "ml-1m", "p5", "amazon", "csv")


def _natural_key(original_id: str):
    return (0, int(original_id), original_id) if original_id.isdigit() else (1, 0, original_id)


def _stats(sequences: dict[str, list]) -> dict:
    lengths = [len(s) for s in sequences.values()]
    items = set(itertools.chain.from_iterable(sequences.values()))
    n = sum(lengths)
    return {
        "users": len(sequences),
        "items": len(items),
        "interactions": n,
        "avg_length": round(n / len(lengths), 4) if lengths else 0.0,
    }


@dataclass
class SequenceData:
    """User sequences of one dataset after filtering, with leave-one-out splits.

    `splits["train"]`: user, items (all but the last two, oldest first)
    `splits["valid"]`: user, history (all but the last two), target (second-to-last)
    `splits["test"]`:  user, history (all but the last), target (last)
    Item ids are catalog ids; histories are whole (truncation happens where inputs are built).
    """

    name: str
    catalog: ItemCatalog
    sequences: dict[str, list[int]]  # user -> catalog ids, oldest first
    splits: DatasetDict
    raw_stats: dict
    filter_report: dict = field(default_factory=dict)
    # user -> what the user said about each item of `sequences[user]` (aligned): {"rating": 4.0,
    # "review": ..., "summary": ...}, keys as the source has them; None for sources without any
    feedback: dict[str, list[dict]] | None = None
    # user -> attribute fields (ml-100k: age, gender, occupation, zip_code); None without a user table
    user_features: dict[str, dict] | None = None

    def stats(self) -> dict:
        return _stats(self.sequences)

    def train_valid(self, limit_users: int | None = None):
        """(train, valid) splits, optionally only their first `limit_users` users (smoke runs)."""
        train, valid = self.splits["train"], self.splits["valid"]
        if limit_users is not None:
            train, valid = train.select(range(min(limit_users, len(train)))), valid.select(range(min(limit_users, len(valid))))
        return train, valid

    def feedback_splits(self, max_history: int | None = None) -> DatasetDict:
        """Ratings and reviews held out per user in time order, the cut of leave-one-out: each user's
        last interaction is `test`, the one before `valid`, the rest `train`, so no test (or
        validation) rating or review is ever trained on, and the sequential splits' targets are the
        same interactions. Rows: user, item, history (catalog ids before the item, oldest first),
        rating (NaN where the source has none), review and summary ("" where absent).
        `max_history` keeps only the newest N items of each history (a whole history per
        interaction grows with the square of the sequence length: ml-1m would need GBs).
        Raises ValueError when the source carries no feedback (P5 text files, tables without a
        rating / review / summary column)."""
        if self.feedback is None:
            raise ValueError(f"{self.name}: the source has no ratings or reviews (feedback); rating, explanation "
                             "and summary tasks need ml-100k / ml-1m ratings, Amazon reviews or a table with a "
                             "'rating', 'review' or 'summary' column")
        rows: dict[str, dict[str, list]] = {k: defaultdict(list) for k in ("train", "valid", "test")}
        for user, items in self.sequences.items():
            said = self.feedback[user]
            for pos, item in enumerate(items):
                split = "test" if pos == len(items) - 1 else "valid" if pos == len(items) - 2 else "train"
                row = rows[split]
                row["user"].append(user)
                row["item"].append(int(item))
                first = 0 if max_history is None else max(0, pos - int(max_history))
                row["history"].append([int(i) for i in items[first:pos]])
                row["rating"].append(float(said[pos].get("rating", math.nan)))
                row["review"].append(str(said[pos].get("review", "")))
                row["summary"].append(str(said[pos].get("summary", "")))
        from datasets import Dataset, DatasetDict, Features, Sequence, Value

        features = Features({"user": Value("string"), "item": Value("int64"), "history": Sequence(Value("int64")),
                             "rating": Value("float64"), "review": Value("string"), "summary": Value("string")})
        return DatasetDict({k: Dataset.from_dict({c: v.get(c, []) for c in features}, features=features)
                            for k, v in rows.items()})

    def describe(self) -> str:
        """Raw and filtered statistics as a small table (printed with every result)."""
        s, r, rep = self.stats(), self.raw_stats, self.filter_report
        rows = [("users", "users", "d"), ("items", "items", "d"), ("interactions", "interactions", "d"),
                ("avg length", "avg_length", ".2f")]
        lines = [f"dataset {self.name:<13}{'raw':>10} {'filtered':>10}"]
        lines += [f"  {name:<19}{r[key]:>10{fmt}} {s[key]:>10{fmt}}" for name, key, fmt in rows]
        lines.append(
            f"  filter: k_core={rep.get('k_core')}, dropped {rep.get('dropped_users', 0)} users "
            f"({rep.get('dropped_users_below_3', 0)} with < 3 interactions) and {rep.get('dropped_items', 0)} items"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"SequenceData({self.name!r}, users={s['users']}, items={s['items']}, "
            f"interactions={s['interactions']}, avg_length={s['avg_length']})"
        )


def _codes(column) -> tuple[np.ndarray, list[str]]:
    """A column of ids as (integer code of each row, the distinct ids as strings), codes in order
    of first appearance. Tables (`Column`) come coded already; lists are coded here."""
    import pandas as pd

    if isinstance(column, Column) and column.labels is not None:
        codes, labels = column.values, [str(label) for label in column.labels]
    else:
        codes, uniques = pd.factorize(np.asarray(column, dtype=object))
        labels = [str(u) for u in uniques]
    codes, labels = merge_equal_labels(codes, labels)
    return np.asarray(codes), labels


def _index_dtype(n: int):
    """The integer type for codes and positions below n: int32 halves the arrays of big tables."""
    return np.int32 if n < 2**31 else np.int64


def _natural_ranks(labels: list[str]) -> np.ndarray:
    """The rank of each id in `_natural_key` order (the order of users and catalog ids)."""
    order = sorted(range(len(labels)), key=lambda j: _natural_key(labels[j]))
    ranks = np.empty(len(labels), dtype=_index_dtype(len(labels)))
    ranks[order] = np.arange(len(labels))
    return ranks


def _time_order(user_ranks: np.ndarray, num_users: int, times: np.ndarray) -> np.ndarray:
    """Row order by user, then time; a stable sort, so ties keep file order (design.md §3).

    The same order as `np.lexsort((times, user_ranks))`, faster: a stable sort by user,
    then a stable sort of one integer key (user, time rank) over rows already grouped by user,
    which timsort merges in a few passes. NaN times come last, as with lexsort; -0.0 ties 0.0."""
    if len(times) == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(times)
    low, high = (float(times[finite].min()), float(times[finite].max())) if finite.any() else (0.0, 0.0)
    span = high - low + 1
    if finite.all() and np.array_equal(times, np.floor(times)) and max(abs(low), abs(high), span) < 2**53 \
            and span * num_users < 2**62:
        time_keys, width = (times - low).astype(np.int64), int(span)  # whole numbers (seconds): no ranking needed
    else:  # ranks of the distinct times; NaNs (equal to each other, as lexsort takes them) are one, the last
        distinct, time_keys = np.unique(times, return_inverse=True, equal_nan=True)
        time_keys, width = time_keys.reshape(-1).astype(np.int64), len(distinct)
    by_user = np.argsort(user_ranks, kind="stable")
    keys = time_keys[by_user]  # in place from here: the arrays are a table long
    del time_keys
    keys += user_ranks[by_user].astype(np.int64) * width
    return by_user[np.argsort(keys, kind="stable")]


def _k_core(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int, k: int) -> tuple[np.ndarray, dict]:
    """Iteratively drop users with fewer than max(k, 3) and items with fewer than k interactions.

    `users` / `items`: codes of the interactions. Every user code counts as a user to start with,
    also one without interactions (all its items were dropped before): it is dropped and counted.
    Returns the positions kept and the report."""
    user_min = max(k, MIN_SEQUENCE_LENGTH)
    present = np.ones(num_users, dtype=bool)
    kept = np.arange(len(users), dtype=_index_dtype(len(users)))
    dropped_users = short_users = 0  # short: dropped for having fewer than 3 interactions at the time
    dropped_items = np.zeros(num_items, dtype=bool)
    while True:
        changed = False
        if k > 0:
            counts = np.bincount(items, minlength=num_items)
            rare = (counts > 0) & (counts < k)
            if rare.any():
                dropped_items |= rare
                keep = ~rare[items]
                kept, users, items = kept[keep], users[keep], items[keep]
                changed = True
        lengths = np.bincount(users, minlength=len(present))
        small = present & (lengths < user_min)
        if small.any():
            short_users += int(np.count_nonzero(lengths[small] < MIN_SEQUENCE_LENGTH))
            dropped_users += int(np.count_nonzero(small))
            present &= ~small
            keep = present[users]
            kept, users, items = kept[keep], users[keep], items[keep]
            changed = True
        if not changed:
            break
    report = {
        "k_core": k,
        "dropped_users": dropped_users,
        "dropped_users_below_3": short_users,
        "dropped_items": int(np.count_nonzero(dropped_items)),  # none of them is left
    }
    return kept, report


_MAX_LIST_VALUES = 2**31 - 1  # values one arrow list array can hold (int32 offsets)
_BLOCK_VALUES = 2**20  # values turned into Python objects at a time


def _blocks(lengths: np.ndarray, size: int):
    """Consecutive runs (one per user, of these lengths) in blocks of at most `size` values (or
    one run), whole runs each: yields (first value, end value, the runs' ends in the block)."""
    ends = np.cumsum(lengths)
    first = 0
    while first < len(lengths):
        start = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, start + size, side="right")), first + 1)
        yield start, int(ends[last - 1]), ends[first:last] - start
        first = last


def _run_lists(values: np.ndarray, lengths: np.ndarray, objects: list) -> list[list]:
    """`[objects[v] for v in run]` for each run of `values` (the objects themselves, not copies:
    ints or dicts), a block at a time, so only a block's flat list exists at once."""
    pool = np.empty(len(objects), dtype=object)
    pool[:] = objects
    runs = []
    for start, stop, ends in _blocks(lengths, _BLOCK_VALUES):
        flat = pool[values[start:stop]].tolist()
        runs.extend(flat[a:b] for a, b in zip(itertools.chain([0], ends[:-1].tolist()), ends.tolist()))
    return runs


def _list_array(values: np.ndarray, lengths: np.ndarray):
    """A pyarrow list<int64> array of consecutive runs of `values` (one of each length), chunked
    where the values would overflow int32 offsets."""
    import pyarrow as pa

    chunks = []
    for start, stop, ends in _blocks(lengths, _MAX_LIST_VALUES):
        offsets = pa.array(np.concatenate([[0], ends]).astype(np.int32), type=pa.int32())
        chunks.append(pa.ListArray.from_arrays(offsets, pa.array(values[start:stop], type=pa.int64())))
    return chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks)


def _splits(users: list[str], values: np.ndarray, lengths: np.ndarray) -> DatasetDict:
    """The leave-one-out splits of sequences given as consecutive runs of catalog ids (`values`),
    one run per user, built as arrow columns (train items and valid histories share theirs)."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, Features, Sequence, Value

    ends = np.cumsum(lengths)
    last = np.zeros(len(values), dtype=bool)  # the last two items of each user
    last[ends - 1] = last[ends - 2] = True
    test_history = np.ones(len(values), dtype=bool)
    test_history[ends - 1] = False
    head = _list_array(values[~last], lengths - 2)  # all but the last two
    user = pa.array(users, type=pa.string())
    ids = Sequence(Value("int64"))
    train = Dataset.from_dict({"user": user, "items": head}, features=Features({"user": Value("string"), "items": ids}))
    split_features = Features({"user": Value("string"), "history": ids, "target": Value("int64")})
    valid = Dataset.from_dict({"user": user, "history": head, "target": pa.array(values[ends - 2], type=pa.int64())},
                              features=split_features)
    test = Dataset.from_dict({"user": user, "history": _list_array(values[test_history], lengths - 1),
                              "target": pa.array(values[ends - 1], type=pa.int64())}, features=split_features)
    return DatasetDict(train=train, valid=valid, test=test)


def _unknown_items_error(unknown: list[str]) -> ValueError:
    return ValueError(
        f"{len(unknown)} interacted item(s) are not in the item table, e.g. {unknown[:5]}; "
        "pass missing_item_text='drop' to drop their interactions or 'keep' to use the id as text"
    )


def _interactions_in_order(raw: RawInteractions):
    """The interactions as integer codes in sequence order: users in their final (natural) order,
    each user's by time, ties in file order. Returns (user ids by code, item ids by code, user
    code and item code of each interaction, the row of each interaction in `raw`)."""
    user_codes, user_labels = _codes(raw.users)
    item_codes, item_labels = _codes(raw.items)
    user_ranks = _natural_ranks(user_labels)  # users coded by rank: sorting by user sorts them as they end up
    user_labels = [user_labels[j] for j in np.argsort(user_ranks)]
    user_codes = user_ranks[user_codes]
    order = _time_order(user_codes, len(user_labels), np.asarray(raw.timestamps, dtype=np.float64))
    return user_labels, item_labels, user_codes[order], item_codes[order], order


def _resolve_source(source: str | os.PathLike, format: str | None, item_file, columns: dict) -> tuple[str, RawInteractions]:
    source_str = str(source)
    if format is None:
        if source_str in ("ml-100k", "ml-1m"):
            format = source_str
        elif Path(source_str).is_dir():
            d = Path(source_str)
            if (d / "ratings.dat").is_file():
                format = "ml-1m"
            elif (d / f"{d.name}.inter").is_file():
                format = "recbole"
            else:
                raise ValueError(
                    f"cannot tell the format of folder {d}: pass format= one of {FORMATS}"
                )
        elif Path(source_str).is_file():
            name = source_str.lower().removesuffix(".gz")
            if name.endswith((".csv", ".tsv", ".parquet")):
                format = "csv"
            elif name.endswith((".json", ".jsonl")):
                format = "amazon"
            else:
                format = "p5"
        else:
            raise FileNotFoundError(
                f"dataset {source_str!r} is neither a built-in name (ml-100k) nor an existing path"
            )
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}: use one of {FORMATS}")
    if format == "ml-100k":
        directory = recbole_ml100k_dir() if source_str == "ml-100k" else Path(source_str)
        return "ml-100k", read_recbole_atomic(directory, "ml-100k")
    if format == "recbole":
        return Path(source_str).name, read_recbole_atomic(source_str)
    if format == "ml-1m":
        if source_str == "ml-1m":
            raise FileNotFoundError(
                "MovieLens-1M is not bundled: download it and pass the folder with ratings.dat and movies.dat"
            )
        return "ml-1m", read_ml1m(source_str)
    name = Path(source_str).name.split(".")[0]
    if format == "p5":
        return name, read_p5(source_str, item_file)
    if format == "amazon":
        return name, read_amazon(source_str, item_file)
    return name, read_interaction_table(source_str, item_file, **columns)


def load_sequences(
    source: str | os.PathLike = "ml-100k",
    format: str | None = None,
    k_core: int | None = None,
    item_file: str | os.PathLike | None = None,
    template: str = "title",
    deduplicate: bool = False,
    missing_item_text: str = "error",
    user_column: str = "user",
    item_column: str = "item",
    time_column: str | None = "timestamp",
) -> SequenceData:
    """Load a dataset as chronological user sequences with leave-one-out splits.

    Args:
        source: "ml-100k" (read from the recbole wheel, offline) or a path.
        format: "ml-100k" | "recbole" | "ml-1m" | "p5" | "amazon" | "csv"; guessed from the path if None.
        k_core: keep users and items with at least k interactions (iterated); 0 disables. None
            takes the dataset's customary setting: 0 for MovieLens (already >= 20 ratings per
            user; the published catalog is kept), 5 for everything else. Users with fewer than 3
            interactions are always dropped (and counted).
        item_file: item table (P5/CSV: CSV/TSV/JSON with an `item` column) or Amazon metadata.
        template: item text: "title", "title_year_genres", "attributes" or a format string.
        deduplicate: keep only the first interaction of each (user, item) pair.
        missing_item_text: what to do with interacted items the item table lacks:
            "error" (default), "drop" (drop their interactions) or "keep" (text "item <id>").
    """
    if k_core is not None and k_core < 0:
        raise ValueError(f"k_core must be >= 0, got {k_core}")
    if missing_item_text not in ("error", "drop", "keep"):
        raise ValueError(f"missing_item_text must be 'error', 'drop' or 'keep', got {missing_item_text!r}")
    columns = {"user_column": user_column, "item_column": item_column, "time_column": time_column}
    name, raw = _resolve_source(source, format, item_file, columns)
    if k_core is None:
        k_core = DEFAULT_K_CORE.get(name, 5)
    if len(raw) == 0:
        raise ValueError(f"{raw.source}: no interactions")
    # Everything below works on integer codes in numpy arrays, one entry per interaction; Python
    # objects are made per user (the sequences) and per distinct id only.
    user_labels, item_labels, users_of, items_of, order = _interactions_in_order(raw)
    said, item_table, user_table = raw.feedback, raw.item_table, raw.user_table
    del raw  # its columns, a table long each, are coded now
    n = len(order)
    raw_stats = {"users": len(user_labels), "items": len(item_labels), "interactions": n,
                 "avg_length": round(n / len(user_labels), 4)}
    report: dict = {}
    kept = np.arange(n, dtype=_index_dtype(n))  # positions (in sequence order) still in

    if deduplicate:  # the first interaction of each (user, item) pair
        import pandas as pd

        # one int64 key per (user, item) pair: int32 codes would wrap past 2**31 pairs and merge pairs
        pairs = users_of.astype(np.int64) * len(item_labels) + items_of.astype(np.int64)
        first = ~pd.Series(pairs).duplicated(keep="first").to_numpy()
        kept = kept[first]
        report["duplicates_dropped"] = n - len(kept)

    if item_table is not None:
        seen = np.bincount(items_of[kept], minlength=len(item_labels)) > 0
        absent = np.array([label not in item_table for label in item_labels], dtype=bool) & seen
        unknown = sorted((item_labels[j] for j in np.flatnonzero(absent)), key=_natural_key)
        if unknown:
            if missing_item_text == "error":
                raise _unknown_items_error(unknown)
            if missing_item_text == "drop":
                kept = kept[~absent[items_of[kept]]]
                report["items_without_text_dropped"] = len(unknown)
                logger.warning("dropped %d items that the item table lacks", len(unknown))

    in_core, core_report = _k_core(users_of[kept], items_of[kept], len(user_labels), len(item_labels), k_core)
    kept = kept[in_core]
    report.update(core_report)
    if core_report["dropped_users"]:
        logger.warning(
            "%s: filtering (k_core=%d) dropped %d users (%d of them with fewer than %d interactions, "
            "too short for leave-one-out) and %d items",
            name, k_core, core_report["dropped_users"], core_report["dropped_users_below_3"],
            MIN_SEQUENCE_LENGTH, core_report["dropped_items"],
        )
    if len(kept) == 0:
        raise ValueError(f"{name}: no user is left after filtering (k_core={k_core})")

    users_of, items_of = users_of[kept], items_of[kept]
    rows = order[kept] if said is not None else None  # each kept interaction's row in the source
    del order, kept
    lengths = np.bincount(users_of, minlength=len(user_labels))
    users = [user_labels[j] for j in np.flatnonzero(lengths)]  # natural order
    lengths = lengths[lengths > 0]
    in_catalog = np.flatnonzero(np.bincount(items_of, minlength=len(item_labels)))
    item_ids = sorted((item_labels[j] for j in in_catalog), key=_natural_key)
    catalog = ItemCatalog(item_ids, [(item_table or {}).get(i, {}) for i in item_ids], template)
    catalog_id = np.full(len(item_labels), -1, dtype=np.int64)
    catalog_id[in_catalog] = [catalog.id_of(item_labels[j]) for j in in_catalog]
    values = catalog_id[items_of]
    del items_of, users_of

    # one int object per catalog id, shared by every sequence
    encoded = dict(zip(users, _run_lists(values, lengths, list(range(len(catalog))))))
    feedback = None
    if said is not None:  # each kept interaction's own feedback (a repeated item: its own rating)
        feedback = dict(zip(users, _run_lists(rows, lengths, said)))
    splits = _splits(users, values, lengths)
    return SequenceData(
        name=name,
        catalog=catalog,
        sequences=encoded,
        splits=splits,
        raw_stats=raw_stats,
        filter_report=report,
        feedback=feedback,
        user_features={u: dict(user_table.get(u, {})) for u in users} if user_table is not None else None,
    )
