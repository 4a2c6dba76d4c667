"""Training throughput per method under a preset: training rows per second of the Trainer's loop.

Each method trains twice through `genrec-hf train` (fresh processes, the preset's flags from
genrec_hf/benchmark.py PRESETS, the first `--users` users of ml-100k, test skipped): `--short`
and `--long` optimizer steps. Both runs load the same model, build the same caches and validate the
same users once, so the difference of their `train_runtime` is the cost of the extra steps alone:
rows/s = (long - short) steps x rows per step / (runtime(long) - runtime(short)). Staged methods
(GenRec's pretraining, LANCER's knowledge stage, RecSysGLM's pretraining) are capped at the same
steps in both runs; the `train_runtime` read is the last stage's (the sequential one).

    python benchmarks/bench_training.py --methods genrec lancer recsys_glm --output training.json
"""

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile

METHODS = ("sasrec", "gru4rec", "st2si", "genrec", "lancer", "recsys_glm")


def last_train_summary(text: str) -> dict:
    """The last `{'train_runtime': ..., 'train_samples_per_second': ...}` dict the Trainer printed."""
    summary = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}") and "train_runtime" in line:
            summary = ast.literal_eval(line)
    if summary is None:
        raise RuntimeError("no train_runtime in the run's output")
    return {k: float(v) for k, v in summary.items()}


def train(method: str, preset: str, steps: int, users: int, workdir: str) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from genrec_hf.benchmark import PRESETS

    cmd = [sys.executable, "-m", "genrec_hf.cli", "train", "--method", method, "--dataset", "ml-100k",
           *PRESETS[preset][method], "--max-steps", str(steps), "--limit-users", str(users), "--skip-test",
           "--no-progress", "--output-dir", os.path.join(workdir, f"{method}-{steps}")]
    if method == "genrec":
        cmd += ["--pretrain-max-steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed: {done.stderr.strip().splitlines()[-1:]}")
    summary = last_train_summary(done.stdout + "\n" + done.stderr)
    return {"steps": steps, "runtime_s": summary["train_runtime"],
            "rows": summary["train_samples_per_second"] * summary["train_runtime"], "command": " ".join(cmd[2:])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "paper"))
    parser.add_argument("--short", type=int, default=4)
    parser.add_argument("--long", type=int, default=24)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for method in args.methods:
            try:
                short = train(method, args.preset, args.short, args.users, workdir)
                long = train(method, args.preset, args.long, args.users, workdir)
                seconds = long["runtime_s"] - short["runtime_s"]
                extra_rows = long["rows"] - short["rows"]  # the Trainer counts steps x total batch
                row = {"method": method, "preset": args.preset, "rows_per_s": round(extra_rows / seconds, 2),
                       "s_per_step": round(seconds / (args.long - args.short), 3),
                       "rows_per_step": round(extra_rows / (args.long - args.short), 1), "runs": [short, long]}
            except RuntimeError as err:
                row = {"method": method, "error": str(err)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| method | rows/s | s / step | rows / step |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | failed |  |  |" if "error" in r else
              f"| {r['method']} | {r['rows_per_s']} | {r['s_per_step']} | {r['rows_per_step']} |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"preset": args.preset, "users": args.users, "threads": os.environ.get("OMP_NUM_THREADS"),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
