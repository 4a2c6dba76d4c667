"""`genrec-hf benchmark` end to end on the tiny preset: real train / evaluate subprocesses."""

import json
import statistics
from pathlib import Path

from genrec_hf import benchmark
from genrec_hf.cli import main


def test_benchmark_records_merges_and_reports(tmp_path, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    results_md = results / "RESULTS.md"
    results.mkdir()
    results_md.write_text("# Results\n\nwritten by hand, kept\n")
    argv = ["benchmark", "--dataset", "ml-100k", "--preset", "tiny", "--results-dir", str(results), "--runs-dir", str(runs),
            "--results-md", str(results_md)]
    assert main([*argv, "--methods", "popularity,sasrec,nosuchmethod", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "skipping nosuchmethod: not a method of genrec_hf" in out

    record = json.loads((results / "ml-100k.json").read_text())
    tiny = record["presets"]["tiny"]
    assert record["dataset_stats"] == {"users": 943, "items": 1682, "interactions": 100000, "avg_length": 106.0445}
    assert "pessimistic ties" in record["protocol"]
    assert tiny["flags"]["sasrec"] == benchmark.PRESETS["tiny"]["sasrec"]
    invocation = tiny["invocations"][0]
    assert "--seed-list 0,1" in invocation["command"] and invocation["versions"]["torch"]
    assert invocation["machine"]["cpu_count"] >= 1 and "cuda_available" in invocation["machine"]
    assert [(r["method"], r["seed"], r["status"]) for r in tiny["runs"]] == [
        ("popularity", None, "ok"), ("sasrec", 0, "ok"), ("sasrec", 1, "ok")]
    for run in tiny["runs"]:
        assert run["test"]["users"] == 100 and 0 <= run["test"]["ndcg@10"] <= 1
        assert run["wall_s"] > 0 and 100 < run["peak_rss_mib"] < 10_000  # the child's own RSS, in MiB
    popularity, *sasrec = tiny["runs"]
    assert popularity["validation_history"] == [] and popularity["checkpoint"] is None
    for run in sasrec:
        assert [h["epoch"] for h in run["validation_history"]] == [1.0, 2.0]
        assert (runs / "ml-100k" / "tiny" / f"sasrec-seed{run['seed']}" / "training_info.json").is_file()
        assert run["checkpoint"].endswith(f"sasrec-seed{run['seed']}") and run["train_runtime_s"] > 0
        assert run["command"].startswith(f"python -m genrec_hf.cli train --method sasrec --seed {run['seed']} ")
        log = Path(run["log"]).read_text()  # the command, the run's output, the launcher's measurement
        assert log.startswith("$ ") and "# exit code 0, wall" in log

    summary = tiny["summary"]["sasrec"]
    values = [r["test"]["ndcg@10"] for r in sasrec]
    assert values[0] != values[1]  # two seeds, two models: the std below is not a trivial 0
    assert summary["seeds"] == 2 and summary["ndcg@10"]["mean"] == statistics.mean(values)
    assert summary["ndcg@10"]["std"] == statistics.stdev(values)
    assert summary["wall_s"]["std"] == statistics.stdev(r["wall_s"] for r in sasrec)
    assert tiny["summary"]["popularity"]["seeds"] == 1 and tiny["summary"]["popularity"]["ndcg@10"]["std"] is None

    table = (results / "ml-100k.md").read_text()
    assert "943 users, 1682 items, 100000 interactions" in table and "preset tiny" in table and "pessimistic ties" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"method", "popularity", "sasrec"}
    assert f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" in rows["sasrec"]
    assert (results / "ml-100k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = results_md.read_text()
    assert text.startswith("# Results\n\nwritten by hand, kept\n")
    assert text.count("<!-- genrec-hf benchmark: ml-100k tiny -->") == 1 and "](ml-100k.png)" in text
    assert "| sasrec |" in text

    # a second call with popularity only: its record replaced, sasrec's kept, the block replaced in place
    assert main([*argv, "--methods", "popularity"]) == 0
    capsys.readouterr()
    tiny = json.loads((results / "ml-100k.json").read_text())["presets"]["tiny"]
    assert [(r["method"], r["seed"]) for r in tiny["runs"]] == [("popularity", None), ("sasrec", 0), ("sasrec", 1)]
    assert tiny["runs"][0]["invocation"] == 1 and tiny["runs"][1]["invocation"] == 0 and len(tiny["invocations"]) == 2
    assert tiny["summary"]["sasrec"]["ndcg@10"]["std"] == statistics.stdev(values)
    text = results_md.read_text()
    assert text.count("<!-- genrec-hf benchmark: ml-100k tiny -->") == 1
    assert text.count("<!-- end genrec-hf benchmark: ml-100k tiny -->") == 1 and "| sasrec |" in text
    assert "written by hand, kept" in text


def test_failed_run_is_recorded_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(benchmark.PRESETS, "sasrec-only", {"sasrec": ["--limit-users", "5"]})
    argv = ["benchmark", "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--preset", "nope"]) == 2
    assert "unknown --preset 'nope'; use tiny | cpu | paper | sasrec-only" in capsys.readouterr().err

    # train rejects the extra flag before any data loads: the run fails, the command still records and reports it
    assert main([*argv, "--preset", "sasrec-only", "--methods", "sasrec,gru4rec", "--seed-list", "3",
                 "--extra-train-flags=--no-such-flag 1"]) == 1
    out = capsys.readouterr().out
    assert "skipping gru4rec: preset sasrec-only has no settings for it" in out
    assert "FAILED (exit code 2)" in out and "unrecognized arguments: --no-such-flag 1" in out
    results = tmp_path / "results"
    entry = json.loads((results / "ml-100k.json").read_text())["presets"]["sasrec-only"]
    assert [(r["seed"], r["status"], r["returncode"]) for r in entry["runs"]] == [(3, "failed", 2)]
    assert "unrecognized arguments: --no-such-flag 1" in entry["runs"][0]["log_tail"]
    assert entry["flags"]["sasrec"] == ["--limit-users", "5", "--no-such-flag", "1"]
    assert entry["summary"]["sasrec"] == {"seeds": 0, "failed": 1}
    assert "| sasrec | 0 (1 failed) |" in (results / "ml-100k.md").read_text()
    assert (results / "ml-100k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_peak_memory_is_the_runs_own(tmp_path):
    """ru_maxrss survives exec: a run spawned straight from this (torch-sized) process would report
    at least this process's RSS; the launcher makes it the run's own."""
    import resource
    import sys

    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 150
    measured = benchmark.run_child([sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"], tmp_path / "x.log")
    assert measured["returncode"] == 3 and measured["peak_rss_mib"] < 60 and measured["wall_s"] >= 0
    assert "hi\n" in (tmp_path / "x.log").read_text()
