"""From raw interactions to user sequences and the leave-one-out splits of design.md §3."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Sequence, Value

from .catalog import ItemCatalog
from .sources import (
    RawInteractions,
    read_amazon,
    read_interaction_table,
    read_ml1m,
    read_p5,
    read_recbole_atomic,
    recbole_ml100k_dir,
)

logger = logging.getLogger(__name__)

MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs one training item, a validation and a test target
DEFAULT_K_CORE = {"ml-100k": 0, "ml-1m": 0}
FORMATS = ("ml-100k", "recbole", "ml-1m", "p5", "amazon", "csv")


def _natural_key(original_id: str):
    return (0, int(original_id), original_id) if original_id.isdigit() else (1, 0, original_id)


def _stats(sequences: dict[str, list]) -> dict:
    lengths = [len(s) for s in sequences.values()]
    items = {i for s in sequences.values() for i in s}
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


def _sorted_sequences(raw: RawInteractions) -> dict[str, list[str]]:
    """Per user, items by time; a stable sort, so ties keep file order (design.md §3)."""
    users = np.asarray(raw.users, dtype=object)
    times = np.asarray(raw.timestamps, dtype=np.float64)
    user_codes, user_index = np.unique(users.astype(str), return_inverse=True)
    # lexsort is stable: the last key is primary (user), then time; equal keys keep row order.
    order = np.lexsort((times, user_index))
    items = np.asarray(raw.items, dtype=object)[order]
    grouped = user_index[order]
    bounds = np.flatnonzero(np.diff(grouped)) + 1
    sequences = {}
    for chunk_items, chunk_users in zip(np.split(items, bounds), np.split(grouped, bounds)):
        if len(chunk_items):
            sequences[str(user_codes[chunk_users[0]])] = [str(i) for i in chunk_items]
    return sequences


def _aligned_feedback(raw: RawInteractions, sequences: dict[str, list[str]]) -> dict[str, list[dict]] | None:
    """Per user, the feedback of each interaction kept in `sequences`, in its order. The rows of a
    (user, item) pair are consumed oldest first (the order `_sorted_sequences` gives them), so a
    repeated item gets each of its own ratings and `deduplicate` keeps the first one's."""
    if raw.feedback is None:
        return None
    times = np.asarray(raw.timestamps, dtype=np.float64)
    users = np.asarray(raw.users, dtype=object).astype(str)
    _, user_index = np.unique(users, return_inverse=True)
    queues: dict[tuple[str, str], deque] = defaultdict(deque)
    for row in np.lexsort((times, user_index)):
        queues[(users[row], str(raw.items[row]))].append(raw.feedback[row])
    return {user: [queues[(user, item)].popleft() for item in items] for user, items in sequences.items()}


def _k_core(sequences: dict[str, list[str]], k: int) -> tuple[dict[str, list[str]], dict]:
    """Iteratively drop users with fewer than max(k, 3) and items with fewer than k interactions."""
    user_min = max(k, MIN_SEQUENCE_LENGTH)
    dropped_users: set[str] = set()
    short_users = 0  # users dropped for having fewer than 3 interactions at the time
    dropped_items: set[str] = set()
    while True:
        changed = False
        if k > 0:
            counts = Counter(i for s in sequences.values() for i in s)
            rare = {i for i, c in counts.items() if c < k}
            if rare:
                dropped_items |= rare
                sequences = {u: [i for i in s if i not in rare] for u, s in sequences.items()}
                changed = True
        small = [u for u, s in sequences.items() if len(s) < user_min]
        if small:
            short_users += sum(1 for u in small if len(sequences[u]) < MIN_SEQUENCE_LENGTH)
            dropped_users.update(small)
            sequences = {u: s for u, s in sequences.items() if len(s) >= user_min}
            changed = True
        if not changed:
            break
    remaining = {i for s in sequences.values() for i in s}
    report = {
        "k_core": k,
        "dropped_users": len(dropped_users),
        "dropped_users_below_3": short_users,
        "dropped_items": len(dropped_items - remaining),
    }
    return sequences, report


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
    sequences = _sorted_sequences(raw)
    raw_stats = _stats(sequences)
    report: dict = {}

    if deduplicate:
        before = sum(len(s) for s in sequences.values())
        sequences = {u: list(dict.fromkeys(s)) for u, s in sequences.items()}
        report["duplicates_dropped"] = before - sum(len(s) for s in sequences.values())

    if raw.item_table is not None:
        unknown = sorted({i for s in sequences.values() for i in s} - raw.item_table.keys(), key=_natural_key)
        if unknown:
            if missing_item_text == "error":
                raise ValueError(
                    f"{len(unknown)} interacted item(s) are not in the item table, e.g. {unknown[:5]}; "
                    "pass missing_item_text='drop' to drop their interactions or 'keep' to use the id as text"
                )
            if missing_item_text == "drop":
                missing = set(unknown)
                sequences = {u: [i for i in s if i not in missing] for u, s in sequences.items()}
                report["items_without_text_dropped"] = len(unknown)
                logger.warning("dropped %d items that the item table lacks", len(unknown))

    sequences, core_report = _k_core(sequences, k_core)
    report.update(core_report)
    if core_report["dropped_users"]:
        logger.warning(
            "%s: filtering (k_core=%d) dropped %d users (%d of them with fewer than %d interactions, "
            "too short for leave-one-out) and %d items",
            name, k_core, core_report["dropped_users"], core_report["dropped_users_below_3"],
            MIN_SEQUENCE_LENGTH, core_report["dropped_items"],
        )
    if not sequences:
        raise ValueError(f"{name}: no user is left after filtering (k_core={k_core})")

    feedback = _aligned_feedback(raw, sequences)
    item_ids = sorted({i for s in sequences.values() for i in s}, key=_natural_key)
    table = raw.item_table or {}
    catalog = ItemCatalog(item_ids, [table.get(i, {}) for i in item_ids], template)
    users = sorted(sequences, key=_natural_key)
    encoded = {u: catalog.ids_of(sequences[u]) for u in users}

    ids = Sequence(Value("int64"))
    train = Dataset.from_dict(
        {"user": users, "items": [encoded[u][:-2] for u in users]},
        features=Features({"user": Value("string"), "items": ids}),
    )
    split_features = Features({"user": Value("string"), "history": ids, "target": Value("int64")})
    valid = Dataset.from_dict(
        {"user": users, "history": [encoded[u][:-2] for u in users], "target": [encoded[u][-2] for u in users]},
        features=split_features,
    )
    test = Dataset.from_dict(
        {"user": users, "history": [encoded[u][:-1] for u in users], "target": [encoded[u][-1] for u in users]},
        features=split_features,
    )
    return SequenceData(
        name=name,
        catalog=catalog,
        sequences=encoded,
        splits=DatasetDict(train=train, valid=valid, test=test),
        raw_stats=raw_stats,
        filter_report=report,
        feedback={u: feedback[u] for u in users} if feedback is not None else None,
        user_features={u: dict(raw.user_table.get(u, {})) for u in users} if raw.user_table is not None else None,
    )
