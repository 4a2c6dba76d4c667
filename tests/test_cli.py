import json

from genrec_hf.cli import main


def test_data_stats_prints_raw_and_filtered(capsys):
    assert main(["data", "stats", "ml-100k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["raw"] == out["filtered"] == {"users": 943, "items": 1682, "interactions": 100000, "avg_length": 106.0445}
    assert main(["data", "stats", "ml-100k", "--k-core", "30"]) == 0
    text = capsys.readouterr().out
    assert "raw" in text and "filtered" in text and "k_core=30" in text


def test_evaluate_popularity_prints_metrics_and_stats(capsys):
    assert main(["evaluate", "--method", "popularity", "--dataset", "ml-100k", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "interactions" in text and "100000" in text
    for name in ("hr@1", "hr@10", "ndcg@10", "mrr"):
        assert name in text
    assert main(["evaluate", "--method", "popularity", "--json", "--no-progress", "--split", "valid"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "valid" and out["num_users"] == 943
    assert 0 < out["metrics"]["hr@20"] < 1


def test_cli_errors_are_clear(capsys, tmp_path):
    assert main(["data", "stats", str(tmp_path / "missing.csv")]) == 2
    assert "neither a built-in name" in capsys.readouterr().err
    bad = tmp_path / "seq.txt"
    bad.write_text("1 1 2 3\n1 4 5 6\n")
    assert main(["data", "stats", str(bad), "--format", "p5"]) == 2
    assert "line 2: user '1' appears on two lines" in capsys.readouterr().err
