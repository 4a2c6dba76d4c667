"""`genrec-hf benchmark`: train and evaluate methods over seeds under a named preset, and record
`<dataset>.json`, a markdown table `<dataset>.md` and a figure `<dataset>.png`.

Each (method, seed) run is its own `genrec-hf train` subprocess, so its wall time and peak memory
(`os.wait4` rusage) are that run's alone, and a crash is one failed record, not a lost benchmark.
Results are merged into the existing JSON by (preset, method, seed), so methods can be added one
at a time; the table and figure are redrawn from everything recorded.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from .cli import TRAIN_METHODS

# method -> extra flags: `genrec-hf train` flags, popularity's are `genrec-hf evaluate` flags
PRESETS = {
    "tiny": {
        "popularity": ["--limit-users", "100"],
        "sasrec": ["--limit-users", "100", "--epochs", "2", "--max-items", "10"],
        "gru4rec": ["--limit-users", "100", "--epochs", "2", "--max-items", "10"],
        "st2si": ["--backbone", "tiny", "--limit-users", "30", "--max-items", "10", "--max-steps", "2"],
        "genrec": ["--backbone", "tiny", "--limit-users", "30", "--max-items", "10", "--pretrain-max-steps", "2",
                   "--max-steps", "2"],
        "lancer": ["--backbone", "tiny", "--lm-layers", "1", "--limit-users", "30", "--max-items", "10", "--max-steps", "2",
                   "--eval-users", "4", "--max-item-tokens", "8", "--num-knowledge-tokens", "5", "--prompt-hidden-size", "32"],
        "recsys_glm": ["--backbone", "glm-tiny", "--limit-users", "30", "--max-items", "5", "--pretrain-epochs", "1",
                       "--max-steps", "2", "--eval-users", "4"],
    },
    "cpu": {  # the settings of the runs in benchmarks/RESULTS.md
        "popularity": [],
        "sasrec": [],  # RecBole's defaults: up to 300 epochs, early stop on validation NDCG@10 (patience 10)
        "gru4rec": [],
        "st2si": ["--backbone", "smollm2-135m", "--tune-mode", "ilp", "--max-items", "20", "--windows", "2"],
        "genrec": ["--backbone", "bart-small", "--max-items", "20"],
        "lancer": ["--backbone", "smollm2-135m", "--lm-layers", "8", "--knowledge-epochs", "0.5", "--stage1-epochs", "2",
                   "--eval-users", "100", "--learning-rate", "1e-3"],
        "recsys_glm": ["--backbone", "glm-small", "--pretrain-epochs", "2", "--epochs", "15", "--eval-users", "100"],
    },
    "paper": {
        "popularity": [],
        "sasrec": [],
        "gru4rec": [],
        "st2si": ["--backbone", "smollm2-135m", "--tune-mode", "full", "--max-items", "50"],
        "genrec": ["--backbone", "bart-small"],  # history 50, 5 pretraining epochs, 20 beams: the defaults
        "lancer": ["--backbone", "gpt2", "--stage2", "full"],
        "recsys_glm": ["--backbone", "smollm2-135m"],  # LoRA rank 8, 8 pretraining epochs: the defaults
    },
}
PRESET_DESCRIPTIONS = {
    "tiny": "smoke test: 30-100 users, 2 epochs or 2 steps, tiny random backbones (seconds per run; numbers mean nothing)",
    "cpu": "what a 2-core CPU affords: item-ID models at RecBole's defaults, LLM methods with small backbones, "
           "20-item histories and validation subsets (hours to days per LLM run)",
    "paper": "the papers' settings (full ST2SI tuning, 50-item histories, LANCER stage 2 on gpt2 from the Hub, "
             "RecSysGLM LoRA): needs a GPU",
}
PROTOCOL = (
    "leave-one-out (last item test, second-to-last validation), stable chronological sort; full ranking over "
    "the catalog with pessimistic ties (generative methods: top-k lists from beam search, invalid beams counted); "
    "history items not excluded; per-user means; MRR counts ranks <= 20; model and epoch selected on validation NDCG@10 only, test "
    "evaluated once (design.md §3)"
)
METRICS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "valid_ratio")
COSTS = ("wall_s", "train_runtime_s", "peak_rss_mib")
METHOD_ORDER = ("popularity", *TRAIN_METHODS)
LOG_TAIL_LINES = 30


def dataset_name(source: str) -> str:
    return Path(source).name if os.path.exists(source) else source


def dataset_flags(args) -> list[str]:
    """The dataset options of the benchmark command, as flags for its train / evaluate children."""
    flags = ["--dataset", args.dataset]
    for flag, value in (("--format", args.format), ("--item-file", args.item_file), ("--k-core", args.k_core)):
        if value is not None:
            flags += [flag, str(value)]
    flags += ["--template", args.template, "--missing-item-text", args.missing_item_text]
    return flags + (["--deduplicate"] if args.deduplicate else [])


# ru_maxrss survives exec, so a run started from this process (torch already imported) would report at
# least this process's RSS. A bare interpreter starts the run instead, waits for it with os.wait4 and
# writes the run's own exit code, wall time and peak RSS (KiB on Linux) as the last line of its log.
LAUNCHER = """
import os, subprocess, sys, time
start = time.monotonic()
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = code = os.waitstatus_to_exitcode(status)
print(f"\\n# exit code {code}, wall {time.monotonic() - start:.1f} s, peak RSS {usage.ru_maxrss} KiB", flush=True)
sys.exit(code if code >= 0 else 128 - code)
"""
LAUNCHER_LINE = re.compile(r"^# exit code (-?\d+), wall ([\d.]+) s, peak RSS (\d+) KiB$", re.M)


def run_child(command: list[str], log_path: Path) -> dict:
    """Run one child with stdout and stderr into `log_path`; its exit code, wall seconds and peak RSS."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *command], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        launcher.wait()
    measured = LAUNCHER_LINE.findall(log_path.read_text(encoding="utf-8", errors="replace"))
    if not measured:  # the launcher itself was killed
        return {"returncode": launcher.returncode, "wall_s": round(time.monotonic() - start, 1), "peak_rss_mib": None}
    code, wall, peak_kib = measured[-1]
    return {"returncode": int(code), "wall_s": float(wall), "peak_rss_mib": round(int(peak_kib) / 1024, 1)}


def log_tail(log_path: Path) -> str:
    return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:])


def run_popularity(data_flags: list[str], flags: list[str], runs_dir: Path) -> dict:
    """Popularity has no seed and no training: one `genrec-hf evaluate --json` child."""
    log_path = runs_dir / "popularity.log"
    command = [sys.executable, "-m", "genrec_hf.cli", "evaluate", "--method", "popularity", *data_flags, *flags,
               "--json", "--no-progress"]
    record = {"method": "popularity", "seed": None, "command": shlex.join(["python", *command[1:]]), "log": str(log_path),
              **run_child(command, log_path)}
    result = next((json.loads(line) for line in reversed(log_path.read_text(encoding="utf-8").splitlines())
                   if line.startswith('{"method"')), None)
    if record["returncode"] != 0 or result is None:
        return {**record, "status": "failed", "log_tail": log_tail(log_path)}
    test = {**result["metrics"], "users": result["num_users"]}
    if result.get("valid_ratio") is not None:
        test["valid_ratio"] = result["valid_ratio"]
    return {**record, "status": "ok", "test": test, "validation_history": [], "train_runtime_s": None,
            "checkpoint": None, "dataset_stats": result["dataset"]}


def run_training(method: str, seed: int, data_flags: list[str], flags: list[str], runs_dir: Path) -> dict:
    """One `genrec-hf train` child; its test metrics and validation history from training_info.json."""
    run_dir = runs_dir / f"{method}-seed{seed}"
    log_path = runs_dir / f"{method}-seed{seed}.log"
    command = [sys.executable, "-m", "genrec_hf.cli", "train", "--method", method, "--seed", str(seed),
               "--output-dir", str(run_dir), *data_flags, *flags, "--no-progress", "--overwrite"]
    record = {"method": method, "seed": seed, "command": shlex.join(["python", *command[1:]]), "log": str(log_path),
              **run_child(command, log_path)}
    info_path = run_dir / "training_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    if record["returncode"] != 0 or "test" not in info:
        return {**record, "status": "failed", "log_tail": log_tail(log_path)}
    history = [{"epoch": h.get("epoch"), "step": h.get("step"), "ndcg@10": h["ndcg@10"]}
               for h in info.get("validation_history", []) if "ndcg@10" in h]  # loss-only entries have none
    return {**record, "status": "ok", "test": info["test"], "validation_history": history,
            "train_runtime_s": info.get("train_runtime_s"), "checkpoint": str(run_dir),
            "dataset_stats": info.get("dataset_stats")}


def summarize(runs: list[dict]) -> dict:
    """Per method: mean and sample std over its successful seeds (std None with one seed)."""
    summary = {}
    for method in ordered_methods(runs):
        ok = [r for r in runs if r["method"] == method and r["status"] == "ok"]
        entry = {"seeds": len(ok), "failed": sum(r["method"] == method and r["status"] != "ok" for r in runs)}
        for name in METRICS + COSTS:
            values = [r["test"].get(name) if name in METRICS else r.get(name) for r in ok]
            values = [v for v in values if v is not None]
            if values:
                entry[name] = {"mean": statistics.mean(values),
                               "std": statistics.stdev(values) if len(values) > 1 else None}
        summary[method] = entry
    return summary


def method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def ordered_methods(runs: list[dict]) -> list[str]:
    return sorted({r["method"] for r in runs}, key=method_rank)


def environment() -> dict:
    import torch

    from .version import __version__

    return {
        "versions": {"genrec_hf": __version__, "torch": torch.__version__, "transformers": metadata.version("transformers"),
                     "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cuda_available": torch.cuda.is_available(),
                    **({"cuda_device": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {})},
    }


def fmt(stat: dict | None, digits: int = 4, unit: str = "") -> str:
    if stat is None:
        return ""
    text = f"{stat['mean']:.{digits}f}" + ("" if stat["std"] is None else f" ± {stat['std']:.{digits}f}")
    return text + unit


def preset_markdown(dataset: str, stats: dict, preset: str, entry: dict) -> str:
    """The section of one preset: dataset stats, protocol, preset, the table, failed runs."""
    runs, summary = entry["runs"], entry["summary"]
    users = sorted({r["test"]["users"] for r in runs if r["status"] == "ok" and "users" in r["test"]})
    described = (f"{stats['users']} users, {stats['items']} items, {stats['interactions']} interactions, mean sequence "
                 f"length {stats['avg_length']}" if stats else "statistics unknown (no run finished)")
    lines = [
        f"**{dataset}**: {described}; test users per run: {', '.join(map(str, users)) or '-'}.",
        "",
        f"Protocol: {PROTOCOL}.",
        "",
        f"Preset `{preset}`: {entry['description']}.",
        "",
        "| method | seeds | HR@1 | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 | MRR | valid ratio | train time | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        cells = [method, str(s["seeds"]) + (f" ({s['failed']} failed)" if s["failed"] else "")]
        cells += [fmt(s.get(name)) for name in METRICS]
        cells += [fmt(s.get("wall_s"), 0, " s"), fmt(s.get("peak_rss_mib"), 0, " MiB")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Values: mean ± sample std over seeds (popularity has no seed). Train time: wall-clock seconds of the "
                  "whole run (data loading, training, validation, test); peak memory: the run's peak RSS."]
    lines += [""] + [f"- {method}: `{shlex.join(entry['flags'][method]) or '(defaults)'}`"
                     for method in sorted(entry["flags"], key=method_rank)]
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        lines += [""] + [f"- failed: {r['method']} seed {r['seed']} (exit code {r['returncode']}, log {r['log']})"
                         for r in failed]
    return "\n".join(lines)


def write_figure(path: Path, dataset: str, presets: dict) -> None:
    """One row per preset: NDCG@10 per method (bars, std error bars); validation NDCG@10 per epoch of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(presets), 2, figsize=(12, 4 * len(presets)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for (preset, entry), (bars, curves) in zip(presets.items(), axes):
        color = {m: colors(METHOD_ORDER.index(m) if m in METHOD_ORDER else 9) for m in entry["summary"]}
        methods = [m for m, s in entry["summary"].items() if "ndcg@10" in s]
        ndcg = [entry["summary"][m]["ndcg@10"] for m in methods]
        bars.bar(methods, [s["mean"] for s in ndcg], yerr=[float("nan") if s["std"] is None else s["std"] for s in ndcg],
                 color=[color[m] for m in methods], capsize=4)  # nan: no error bar for a single run
        bars.set(title=f"{dataset}, preset {preset}: test NDCG@10 (mean ± std over seeds)", ylabel="NDCG@10")
        bars.tick_params(axis="x", labelrotation=30)
        labelled = set()
        for run in entry["runs"]:
            history = run.get("validation_history") or []
            if run["status"] == "ok" and history:
                curves.plot([h["epoch"] for h in history], [h["ndcg@10"] for h in history], marker=".",
                            color=color[run["method"]], label=None if run["method"] in labelled else run["method"])
                labelled.add(run["method"])
        curves.set(title="validation NDCG@10 per run", xlabel="epoch", ylabel="NDCG@10")
        if labelled:
            curves.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def update_results_md(path: Path, dataset: str, preset: str, section: str, png: Path) -> None:
    """Replace this (dataset, preset)'s marked block in `path`, or append one."""
    start, end = f"<!-- genrec-hf benchmark: {dataset} {preset} -->", f"<!-- end genrec-hf benchmark: {dataset} {preset} -->"
    image = os.path.relpath(png, start=path.parent)
    block = f"{start}\n{section}\n\n![{dataset} benchmark]({image})\n{end}"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def run_benchmark(args) -> int:
    """The `genrec-hf benchmark` command: returns 0, or 1 if any run failed."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown --preset {args.preset!r}; use {' | '.join(PRESETS)}")
    preset_flags = PRESETS[args.preset]
    if args.dataset is None:
        args.dataset = "ml-100k"
    dataset = dataset_name(args.dataset)
    requested = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(preset_flags)
    methods = []
    for method in requested:
        if method not in METHOD_ORDER:
            print(f"skipping {method}: not a method of genrec_hf ({', '.join(METHOD_ORDER)})")
        elif method not in preset_flags:
            print(f"skipping {method}: preset {args.preset} has no settings for it")
        else:
            methods.append(method)
    if not methods:
        print("nothing to run")
        return 0
    try:
        seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    except ValueError:
        raise ValueError(f"--seed-list expects comma-separated integers, got {args.seed_list!r}") from None
    extra = shlex.split(args.extra_train_flags or "")
    data_flags = dataset_flags(args)
    runs_dir = Path(args.runs_dir) / dataset / args.preset

    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{dataset}.json"
    results = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {"dataset": dataset, "presets": {}}
    entry = results["presets"].get(args.preset, {})
    if entry and entry.get("dataset_flags") != data_flags:  # other data: earlier numbers are not comparable
        print(f"note: dataset options differ from the recorded ones; dropping the earlier {args.preset} records")
        entry = {}
    entry = {"description": PRESET_DESCRIPTIONS.get(args.preset, ""), "dataset_flags": data_flags,
             "flags": entry.get("flags", {}), "invocations": entry.get("invocations", []), "runs": entry.get("runs", [])}
    results["presets"][args.preset] = entry
    results["protocol"] = PROTOCOL
    command = ["genrec-hf", "benchmark", *data_flags, "--methods", ",".join(requested), "--preset", args.preset,
               "--seed-list", ",".join(map(str, seeds)), "--results-dir", args.results_dir, "--runs-dir", args.runs_dir,
               *(["--extra-train-flags", args.extra_train_flags] if extra else [])]
    entry["invocations"].append({"command": shlex.join(command),  # the resolved equivalent of what was typed
                                 "started": datetime.datetime.now().isoformat(timespec="seconds"), **environment()})

    jobs = [(m, None) if m == "popularity" else (m, s) for m in methods for s in ([None] if m == "popularity" else seeds)]
    any_failed = False
    for number, (method, seed) in enumerate(jobs, start=1):
        flags = preset_flags[method] + ([] if method == "popularity" else extra)
        print(f"[{number}/{len(jobs)}] {method}" + ("" if seed is None else f" seed {seed}") + f": {shlex.join(flags)}", flush=True)
        if method == "popularity":
            record = run_popularity(data_flags, flags, runs_dir)
        else:
            record = run_training(method, seed, data_flags, flags, runs_dir)
        record["invocation"] = len(entry["invocations"]) - 1
        entry["flags"][method] = flags
        entry["runs"] = [r for r in entry["runs"] if (r["method"], r["seed"]) != (method, seed)] + [record]
        if record["status"] == "ok":
            results["dataset_stats"] = record.pop("dataset_stats") or results.get("dataset_stats")
            print(f"    ok: test ndcg@10 {record['test']['ndcg@10']:.4f}, {record['wall_s']} s, "
                  f"peak {record['peak_rss_mib']:.0f} MiB (log {record['log']})")
        else:
            any_failed = True
            print(f"    FAILED (exit code {record['returncode']}), log {record['log']}:\n{record['log_tail']}")
        entry["runs"].sort(key=lambda r: (method_rank(r["method"]), r["seed"] or 0))
        entry["summary"] = summarize(entry["runs"])
        json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # after every run: a crash keeps the rest

    stats = results.get("dataset_stats", {})
    sections = {p: preset_markdown(dataset, stats, p, e) for p, e in results["presets"].items()}
    (results_dir / f"{dataset}.md").write_text(
        "\n\n".join(f"## {dataset}, preset {p}\n\n{text}" for p, text in sections.items()) + "\n", encoding="utf-8")
    png = results_dir / f"{dataset}.png"
    write_figure(png, dataset, results["presets"])
    if args.results_md:
        update_results_md(Path(args.results_md), dataset, args.preset, sections[args.preset], png)
    print(f"\n{sections[args.preset]}\n\nwrote {json_path}, {results_dir / f'{dataset}.md'}, {png}")
    return 1 if any_failed else 0
