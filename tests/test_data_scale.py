"""Loading at scale (issue 13): `load_sequences` works on numpy codes instead of per-interaction
Python objects. Its results must be exactly those of the straightforward implementation it
replaced, kept here as the reference: same sequences (ties in file order), catalog ids, splits,
statistics, filter report, feedback and errors."""

import json
import math
import subprocess
import sys
from collections import Counter, defaultdict, deque

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genrec_hf.data import DataFormatError, RawInteractions, load_sequences, read_recbole_atomic, recbole_ml100k_dir
from genrec_hf.data import sequences as seq_module
from genrec_hf.data import sources
from genrec_hf.data.catalog import ItemCatalog
from genrec_hf.data.sources import Column


# -- the reference: the per-interaction Python implementation that load_sequences had --------------
def _ref_time_column(column, path, name) -> list[float]:
    numeric = pd.to_numeric(column, errors="coerce")
    if not numeric.isna().any():
        return numeric.astype(float).tolist()
    parsed = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    neither = (numeric.isna() & parsed.isna()).to_numpy()
    if neither.any():
        row = int(neither.argmax())
        raise DataFormatError(
            f"{path}, row {row + 2}: {name!r} value {column.iloc[row]!r} is neither a number nor a date")
    if parsed.isna().any():
        row = int(parsed.isna().to_numpy().argmax())
        raise DataFormatError(
            f"{path}, row {row + 2}: {name!r} mixes numbers ({column.iloc[row]!r}) and dates; use one kind")
    return ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).astype(float).tolist()


def reference_read_table(path, item_file=None) -> RawInteractions:
    frame = sources._read_frame(path)
    for name in ("user", "item"):
        for row_no, v in enumerate(frame[name].tolist(), start=2):
            if v is None or v == "" or v != v:
                raise DataFormatError(f"{path}, row {row_no}: empty {name!r}")
    users = sources._id_strings(frame["user"].tolist(), path, "user")
    items = sources._id_strings(frame["item"].tolist(), path, "item")
    times = _ref_time_column(frame["timestamp"], path, "timestamp")
    feedback = None
    if "rating" in frame.columns:
        feedback = [{} for _ in users]
        for row_no, (row, value) in enumerate(zip(feedback, frame["rating"].tolist()), start=2):
            if value is None or value == "" or value != value:
                continue
            row["rating"] = sources._number(str(value), path, row_no, "rating")
    table = sources.read_item_table(item_file) if item_file is not None else None
    return RawInteractions(users, items, times, table, source=str(path), feedback=feedback)


def _ref_sorted_sequences(raw):
    users = np.asarray(raw.users, dtype=object)
    times = np.asarray(raw.timestamps, dtype=np.float64)
    user_codes, user_index = np.unique(users.astype(str), return_inverse=True)
    order = np.lexsort((times, user_index))
    items = np.asarray(raw.items, dtype=object)[order]
    grouped = user_index[order]
    bounds = np.flatnonzero(np.diff(grouped)) + 1
    sequences = {}
    for chunk_items, chunk_users in zip(np.split(items, bounds), np.split(grouped, bounds)):
        if len(chunk_items):
            sequences[str(user_codes[chunk_users[0]])] = [str(i) for i in chunk_items]
    return sequences


def _ref_aligned_feedback(raw, sequences):
    if raw.feedback is None:
        return None
    times = np.asarray(raw.timestamps, dtype=np.float64)
    users = np.asarray(raw.users, dtype=object).astype(str)
    _, user_index = np.unique(users, return_inverse=True)
    queues = defaultdict(deque)
    for row in np.lexsort((times, user_index)):
        queues[(users[row], str(raw.items[row]))].append(raw.feedback[row])
    return {user: [queues[(user, item)].popleft() for item in items] for user, items in sequences.items()}


def _ref_k_core(sequences, k):
    user_min = max(k, 3)
    dropped_users, short_users, dropped_items = set(), 0, set()
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
            short_users += sum(1 for u in small if len(sequences[u]) < 3)
            dropped_users.update(small)
            sequences = {u: s for u, s in sequences.items() if len(s) >= user_min}
            changed = True
        if not changed:
            break
    remaining = {i for s in sequences.values() for i in s}
    return sequences, {"k_core": k, "dropped_users": len(dropped_users), "dropped_users_below_3": short_users,
                       "dropped_items": len(dropped_items - remaining)}


def reference_load(raw, name, k_core=5, deduplicate=False, missing_item_text="error") -> dict:
    key = seq_module._natural_key
    sequences = _ref_sorted_sequences(raw)
    raw_stats = seq_module._stats(sequences)
    report = {}
    if deduplicate:
        before = sum(len(s) for s in sequences.values())
        sequences = {u: list(dict.fromkeys(s)) for u, s in sequences.items()}
        report["duplicates_dropped"] = before - sum(len(s) for s in sequences.values())
    if raw.item_table is not None:
        unknown = sorted({i for s in sequences.values() for i in s} - raw.item_table.keys(), key=key)
        if unknown:
            if missing_item_text == "error":
                raise seq_module._unknown_items_error(unknown)
            if missing_item_text == "drop":
                missing = set(unknown)
                sequences = {u: [i for i in s if i not in missing] for u, s in sequences.items()}
                report["items_without_text_dropped"] = len(unknown)
    sequences, core_report = _ref_k_core(sequences, k_core)
    report.update(core_report)
    if not sequences:
        raise ValueError(f"{name}: no user is left after filtering (k_core={k_core})")
    feedback = _ref_aligned_feedback(raw, sequences)
    item_ids = sorted({i for s in sequences.values() for i in s}, key=key)
    table = raw.item_table or {}
    catalog = ItemCatalog(item_ids, [table.get(i, {}) for i in item_ids])
    users = sorted(sequences, key=key)
    encoded = {u: catalog.ids_of(sequences[u]) for u in users}
    return {
        "sequences": list(encoded.items()),
        "catalog": catalog.to_dict(),
        "raw_stats": raw_stats,
        "stats": seq_module._stats(encoded),
        "report": list(report.items()),
        "train": {"user": users, "items": [encoded[u][:-2] for u in users]},
        "valid": {"user": users, "history": [encoded[u][:-2] for u in users],
                  "target": [encoded[u][-2] for u in users]},
        "test": {"user": users, "history": [encoded[u][:-1] for u in users], "target": [encoded[u][-1] for u in users]},
        "feedback": None if feedback is None else [(u, feedback[u]) for u in users],
    }


def summary(data) -> dict:
    return {
        "sequences": list(data.sequences.items()),
        "catalog": data.catalog.to_dict(),
        "raw_stats": data.raw_stats,
        "stats": data.stats(),
        "report": list(data.filter_report.items()),
        **{name: data.splits[name].to_dict() for name in ("train", "valid", "test")},
        "feedback": None if data.feedback is None else list(data.feedback.items()),
    }


def outcome(fn):
    try:
        return fn()
    except (ValueError, DataFormatError) as err:
        return f"{type(err).__name__}: {err}"


# -- random tables: ties, repeats, k-core casualties, string / integer / float ids -------------------
STRING_IDS = ["1", "2", "10", "02", "u1", "u10", "b", "B", "x y"]
INTEGER_IDS = [1, 2, 3, 10, 11, 100, 2**40]
TIME_STYLES = {
    "int": st.integers(0, 4).map(str),
    "negative": st.integers(-3, 3).map(str),
    "fraction": st.sampled_from(["0.5", "1.5", "1.50", "-0.0", "0", "2.25", "1e3"]),
    "date": st.sampled_from(["2024-01-01", "2024-01-02", "2024-01-02 12:00:00", "2023-12-31"]),
}


@st.composite
def tables(draw):
    kind = draw(st.sampled_from(["csv", "jsonl-int", "jsonl-float", "parquet-int", "parquet-str"]))
    pool = STRING_IDS if kind in ("csv", "parquet-str") else INTEGER_IDS
    time_style = draw(st.sampled_from(sorted(TIME_STYLES))) if kind == "csv" else "int"
    users = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
    items = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=7, unique=True))
    rows = [(user, item, time) for user in users
            for item, time in draw(st.lists(st.tuples(st.sampled_from(items), TIME_STYLES[time_style]), max_size=12))]
    rows = draw(st.permutations(rows)) if rows else [(users[0], items[0], draw(TIME_STYLES[time_style]))]
    ratings = draw(st.none() | st.lists(st.sampled_from(["", "1", "4.5", "5"]), min_size=len(rows), max_size=len(rows)))
    titled = draw(st.none() | st.sets(st.sampled_from(items), max_size=len(items)))
    options = {"k_core": draw(st.sampled_from([0, 0, 1, 2, 3, 5])), "deduplicate": draw(st.booleans()),
               "missing_item_text": draw(st.sampled_from(["error", "keep", "drop"]))}
    return kind, rows, ratings, titled, options


def write_table(directory, kind, rows, ratings, titled):
    columns = {"user": [r[0] for r in rows], "item": [r[1] for r in rows], "timestamp": [r[2] for r in rows]}
    if ratings is not None:
        columns["rating"] = ratings
    if kind == "csv":
        path = directory / "table.csv"
        lines = [",".join(columns)] + [",".join(values) for values in zip(*columns.values())]
        path.write_text("\n".join(lines) + "\n")
    elif kind.startswith("jsonl"):
        path = directory / "table.jsonl"
        cast = float if kind == "jsonl-float" else int
        records = [{"user": cast(u), "item": cast(i), "timestamp": int(t)} for u, i, t in rows]
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path = directory / "table.parquet"
        frame = pd.DataFrame({**columns, "timestamp": [int(t) for t in columns["timestamp"]]})
        if ratings is not None:
            frame["rating"] = [float(r) if r else math.nan for r in ratings]
        frame.to_parquet(path)
    item_file = None
    if titled is not None:
        item_file = directory / "items.csv"
        item_file.write_text("item,title\n" + "".join(f"{i},title {i}\n" for i in sorted(map(str, titled))))
    return path, item_file


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables())
def test_load_sequences_matches_the_reference_on_random_tables(tmp_path, table):
    kind, rows, ratings, titled, options = table
    path, item_file = write_table(tmp_path, kind, rows, ratings, titled)
    expected = outcome(lambda: reference_load(reference_read_table(path, item_file), "table", **options))
    got = outcome(lambda: summary(load_sequences(path, format="csv", item_file=item_file, **options)))
    assert got == expected


@pytest.mark.parametrize("kind", ["csv", "parquet-int"])
@pytest.mark.parametrize("options", [{"k_core": 5}, {"k_core": 3, "deduplicate": True, "missing_item_text": "drop"},
                                     {"k_core": 0, "missing_item_text": "keep"}])
def test_a_larger_random_table_matches_the_reference(tmp_path, kind, options):
    """Many users dropped by k-core (some only after their items were), ties and repeats everywhere."""
    rng = np.random.default_rng(len(str(options)))
    n = 3000
    users = rng.choice(120, n, p=np.arange(1, 121)[::-1] / np.arange(1, 121).sum())  # a few users have 1-5 rows
    items = rng.zipf(1.3, n) % 90
    pool = np.array(STRING_IDS + [f"i{j}" for j in range(200)]) if kind == "csv" else np.arange(1000, 1200)
    rows = [(str(u), str(i), str(t)) for u, i, t in zip(pool[users], pool[items], rng.integers(0, 30, n))]
    ratings = [str(r) if r else "" for r in rng.integers(0, 6, n)]
    titled = set(str(i) for i in pool[np.unique(items)][::3]) if "missing_item_text" in options else None
    if kind == "parquet-int":
        rows = [(int(u), int(i), t) for u, i, t in rows]
        titled = None if titled is None else {int(i) for i in titled}
    path, item_file = write_table(tmp_path, kind, rows, ratings, titled)
    expected = reference_load(reference_read_table(path, item_file), "table", **options)
    assert expected["report"][-3][1] > 0  # users were dropped
    assert summary(load_sequences(path, format="csv", item_file=item_file, **options)) == expected


def test_ml100k_matches_the_reference():
    """Real ties: 76% of ml-100k's interactions share their (user, timestamp) with another one."""
    raw = read_recbole_atomic(recbole_ml100k_dir(), "ml-100k")
    assert summary(load_sequences("ml-100k")) == reference_load(raw, "ml-100k", k_core=0)
    expected = reference_load(raw, "ml-100k", k_core=20, deduplicate=True)
    assert summary(load_sequences("ml-100k", k_core=20, deduplicate=True)) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "10", "9"]), st.sampled_from(["x", "y", "z", "1"]),
                          st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.0, math.nan, math.inf, -math.inf, 2.0**60])),
                min_size=1, max_size=30),
       st.booleans())
def test_raw_interactions_with_odd_times_match_the_reference(rows, with_feedback):
    """Lists (the other readers) and times the tables never give: NaN, infinities, -0.0, 2**60."""
    feedback = [{"rating": float(n)} for n in range(len(rows))] if with_feedback else None
    raw = RawInteractions([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], feedback=feedback)
    original = seq_module._resolve_source
    try:
        seq_module._resolve_source = lambda *args: ("raw", raw)
        got = outcome(lambda: summary(load_sequences("raw", k_core=0)))
    finally:
        seq_module._resolve_source = original
    assert got == outcome(lambda: reference_load(raw, "raw", k_core=0))


@pytest.mark.parametrize("seed", range(5))
def test_time_order_is_lexsort(seed):
    rng = np.random.default_rng(seed)
    n, users = 5000, 300
    user_ranks = rng.integers(0, users, n)
    for times in (rng.integers(0, 50, n).astype(float),  # whole numbers, many ties
                  rng.integers(-(2**40), 2**40, n).astype(float),
                  rng.choice([0.5, -0.0, 0.0, math.nan, math.inf, -math.inf, 1e300], n),  # ranked
                  np.zeros(n)):
        expected = np.lexsort((times, user_ranks))
        assert np.array_equal(seq_module._time_order(user_ranks, users, times), expected)


def test_blocks_give_the_same_sequences_and_splits(tmp_path, monkeypatch):
    """Sequences are made a block of users at a time, list arrays chunked where int32 offsets
    would overflow: small blocks and chunks give the same result as one."""
    path = tmp_path / "table.csv"
    rows = "".join(f"u{u},{i},{i},{u}\n" for u in range(6) for i in range(3 + u))
    path.write_text("user,item,timestamp,rating\n" + rows)
    whole = load_sequences(path, k_core=0)
    monkeypatch.setattr(seq_module, "_MAX_LIST_VALUES", 5)
    monkeypatch.setattr(seq_module, "_BLOCK_VALUES", 7)
    chunked = load_sequences(path, k_core=0)
    assert chunked.splits["test"].data.table.column("history").num_chunks > 1
    assert list(chunked.sequences.items()) == list(whole.sequences.items())
    assert list(chunked.feedback.items()) == list(whole.feedback.items())
    for name in ("train", "valid", "test"):
        assert chunked.splits[name].to_dict() == whole.splits[name].to_dict()
        assert chunked.splits[name].features == whole.splits[name].features


def test_split_features_are_the_documented_ones(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"u,{i},{i}\n" for i in range(5)))
    splits = load_sequences(path, k_core=0).splits
    assert {k: str(v) for k, v in splits["train"].features.items()} == {
        "user": "Value('string')", "items": "List(Value('int64'))"}
    assert {k: str(v) for k, v in splits["test"].features.items()} == {
        "user": "Value('string')", "history": "List(Value('int64'))", "target": "Value('int64')"}


def test_a_column_reads_like_the_list_it_stands_for():
    ids = Column(np.array([1, 0, 1]), ["a", "b"])
    assert ids == ["b", "a", "b"] and ["b", "a", "b"] == ids and ids == ("b", "a", "b") and ids != ["b"]
    assert ids[0] == "b" and ids[-1] == "b" and ids[1:] == ["a", "b"] and list(ids) == ["b", "a", "b"] and len(ids) == 3
    times = Column(np.array([1.0, 2.5]))
    assert times == [1.0, 2.5] and isinstance(times[0], float)
    assert np.asarray(times, dtype=np.float64).tolist() == [1.0, 2.5]
    assert np.asarray(ids).tolist() == ["b", "a", "b"]


def test_table_ids_come_back_coded(tmp_path):
    path = tmp_path / "table.parquet"
    pd.DataFrame({"user": [7, 7, 8], "item": [1.0, 2.0, 1.0], "timestamp": [3, 2, 1]}).to_parquet(path)
    raw = sources.read_interaction_table(path)
    assert isinstance(raw.users, Column) and raw.users.labels == ["7", "8"] and raw.users.values.dtype == np.int32
    assert raw.items == ["1", "2", "1"] and raw.timestamps == [3.0, 2.0, 1.0]
    pd.DataFrame({"user": [7, 7], "item": [1.0, 2.5], "timestamp": [3, 2]}).to_parquet(path)
    with pytest.raises(DataFormatError, match=r"row 3: 'item' value 2.5 is not an id"):
        sources.read_interaction_table(path)


def test_importing_the_data_package_does_not_import_datasets():
    code = "import sys, genrec_hf.data; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_deduplication_keys_do_not_wrap_past_two_billion_pairs(tmp_path):
    """65,537 users x 65,536 items: more (user, item) pairs than int32 holds. Codes are int32, and a
    pair key built in int32 wrapped, merging the last user's pairs with user 0's (3 interactions
    silently dropped as duplicates, the user lost)."""
    users, items = 65_537, 65_536
    path = tmp_path / "pairs.csv"
    rows = ["user,item,timestamp"]
    for u in range(users):
        rows += [f"{u},{(3 * u + k) % items},{k}" for k in range(3)]  # user 65,536 has user 0's items
    path.write_text("\n".join(rows) + "\n")
    data = load_sequences(str(path), format="csv", k_core=0, deduplicate=True)
    assert data.filter_report["duplicates_dropped"] == 0
    assert data.stats()["users"] == users and data.stats()["interactions"] == 3 * users
