"""`load_sequences` on a large synthetic interaction table: wall time and peak memory.

A synthetic (user, item, timestamp) table is written once per size into `--work-dir` (a CSV by
default, or parquet) and reused by later runs: users' activity is log-normal (median about 30,
mean `interactions / users`, a few users with fewer than 5 rows that k-core drops), item
popularity Zipf-like (p ~ 1/rank over a shuffled id order), timestamps whole days over ten years
(so a user has tied timestamps now and then, which the stable sort keeps in file order), and
repeated (user, item) pairs occur as they come. Ids are integers, rows in random order.

Each size is loaded in a fresh child process with `load_sequences(path)` (the generic table
reader, k-core at its default of 5) and reports: the seconds of the call, the child's peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), its RSS after importing genrec_hf.data, numpy,
pandas, pyarrow and datasets before the call (`rss_after_import_mib`; the peak minus it is
`load_peak_increase_mib`, the loader's own memory), the file size, the dataset statistics and a
fingerprint (sha256) of the catalog, the sequences and the three splits, so two versions of the
code can be checked to give the same result. The parent imports nothing heavy and writes the
tables in another child, so the loading child's peak is its own. The load average is recorded
before each run: other jobs on the machine change the time, not the memory.

    python benchmarks/bench_load_sequences.py                       # 1M and 10M rows
    python benchmarks/bench_load_sequences.py --interactions 1000000 --output /tmp/1m.json
    PYTHONPATH=/tmp/old_checkout python benchmarks/bench_load_sequences.py --output /tmp/old.json  # another copy
    python benchmarks/bench_load_sequences.py --baseline-json /tmp/old.json   # ...kept next to this run's numbers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO, "benchmarks", "results", "load-sequences.json")
CHUNK = 1_000_000  # rows generated and written at a time


def table_path(work_dir: str, interactions: int, users: int, items: int, fmt: str, seed: int) -> str:
    return os.path.join(work_dir, f"interactions-{interactions}-u{users}-i{items}-s{seed}.{fmt}")


# -- child: write a synthetic table ------------------------------------------------------------------
def generate(path: str, interactions: int, users: int, items: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, users)  # relative activity of each user
    user_ids = rng.permutation(users) + 1
    popularity = 1.0 / np.arange(1, items + 1)  # Zipf-like, by popularity rank
    item_ids = rng.permutation(items) + 1  # the most popular item gets a random id
    user_p, item_p = activity / activity.sum(), popularity / popularity.sum()
    start, day = 1_300_000_000, 86_400
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64())])
    tmp = path + ".tmp"
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(tmp, schema)
    else:
        import pyarrow.csv as pacsv

        writer = pacsv.CSVWriter(tmp, schema, write_options=pacsv.WriteOptions(quoting_style="none"))
    with writer:
        for first in range(0, interactions, CHUNK):
            n = min(CHUNK, interactions - first)
            batch = pa.record_batch([
                pa.array(user_ids[rng.choice(users, n, p=user_p)]),
                pa.array(item_ids[rng.choice(items, n, p=item_p)]),
                pa.array(start + day * rng.integers(0, 3650, n)),
            ], schema=schema)
            writer.write_batch(batch)
    os.replace(tmp, path)


# -- child: load it ------------------------------------------------------------------------------------
def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fingerprint(data) -> str:
    """sha256 of the catalog's original ids, the sequences (user order included) and every split's
    columns, for comparing two versions of `load_sequences`."""
    import hashlib

    import numpy as np
    import pyarrow as pa

    h = hashlib.sha256()
    h.update("\n".join(data.catalog.original_ids).encode())
    for user, items in data.sequences.items():
        h.update(user.encode() + b"\0")
        h.update(np.asarray(items, dtype=np.int64).tobytes())
    for name in ("train", "valid", "test"):
        table = data.splits[name].data.table
        h.update(name.encode() + str(table.schema).encode())
        for column in table.column_names:
            array = table.column(column).combine_chunks()
            if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                lengths = array.value_lengths().to_numpy(zero_copy_only=False)
                h.update(np.asarray(lengths, dtype=np.int64).tobytes())
                h.update(np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.int64).tobytes())
            elif pa.types.is_integer(array.type):
                h.update(np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64).tobytes())
            else:
                h.update("\0".join(array.to_pylist()).encode())
    return h.hexdigest()


def load(path: str) -> dict:
    import resource

    started = time.perf_counter()
    import datasets  # noqa: F401  (imported by the loader either way: part of the baseline, not of the load)
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import genrec_hf.data.sequences as sequences_module
    from genrec_hf.data import load_sequences

    imported = time.perf_counter()
    rss_imported = rss_mib()
    data = load_sequences(path)
    seconds = time.perf_counter() - imported
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rss_after = rss_mib()
    return {
        "load_s": round(seconds, 2),
        "import_s": round(imported - started, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "rss_after_import_mib": round(rss_imported, 1),
        "load_peak_increase_mib": round(peak_mib - rss_imported, 1),
        "rss_after_load_mib": round(rss_after, 1),
        "raw_stats": data.raw_stats,
        "stats": data.stats(),
        "filter": data.filter_report,
        "catalog_items": len(data.catalog),
        "fingerprint": fingerprint(data),
        "code": os.path.dirname(os.path.dirname(os.path.abspath(sequences_module.__file__))),
    }


# -- parent ----------------------------------------------------------------------------------------------
def run_child(args: list[str]) -> dict:
    # cwd: the work dir, so `PYTHONPATH` (not the current folder) decides which genrec_hf is timed
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                         cwd=os.path.dirname(args[-1]) or ".")
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def versions() -> dict:
    found = {}
    for package in ("numpy", "pandas", "pyarrow", "datasets"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="table sizes, each timed in its own child (default: 1M for scaling, then 10M)")
    parser.add_argument("--users", type=int, default=None, help="users (default: interactions / 50; 200k at 10M)")
    parser.add_argument("--items", type=int, default=None, help="items (default: interactions / 200; 50k at 10M)")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/genrec_scale", help="where the tables are written once and kept")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--baseline-json", help="an earlier output (another copy of the code, run with PYTHONPATH) "
                                                "to keep under 'baseline', its fingerprints checked against these")
    parser.add_argument("--child", choices=("generate", "load"), help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "generate":
        path, n, users, items, seed = args.child_args
        generate(path, int(n), int(users), int(items), int(seed))
        print(json.dumps({"path": path}))
        return
    if args.child == "load":
        print(json.dumps(load(args.child_args[0])))
        return

    os.makedirs(args.work_dir, exist_ok=True)
    runs = []
    for n in args.interactions:
        users = args.users or max(1, n // 50)
        items = args.items or max(1, n // 200)
        path = table_path(os.path.abspath(args.work_dir), n, users, items, args.format, args.seed)
        if not os.path.isfile(path):
            started = time.perf_counter()
            run_child(["--child", "generate", path, str(n), str(users), str(items), str(args.seed)])
            print(f"wrote {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        load_before = os.getloadavg()
        started = time.perf_counter()
        result = run_child(["--child", "load", path])
        row = {"interactions": n, "users": users, "items": items, "format": args.format, "path": path,
               "file_mib": round(os.path.getsize(path) / 2**20, 1),
               "child_wall_s": round(time.perf_counter() - started, 2),
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in os.getloadavg()], **result}
        print(json.dumps({k: row[k] for k in ("interactions", "file_mib", "load_s", "peak_rss_mib",
                                              "load_peak_increase_mib", "loadavg_before")}), file=sys.stderr)
        runs.append(row)
    record = {
        "benchmark": "load_sequences on a synthetic interaction table",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "python": platform.python_version(), **versions()},
        "pythonpath": os.environ.get("PYTHONPATH"),
        "runs": runs,
    }
    if args.baseline_json:
        with open(args.baseline_json) as f:
            baseline = json.load(f)
        fingerprints = {(r["interactions"], r["path"]): r["fingerprint"] for r in baseline["runs"]}
        for row in runs:
            if (row["interactions"], row["path"]) in fingerprints:
                row["same_result_as_baseline"] = row["fingerprint"] == fingerprints[(row["interactions"], row["path"])]
        record["baseline"] = baseline
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
