"""The Trainer example scripts: validation-only model selection by default, a full checkpoint folder."""

import json
import runpy
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser, TrainingArguments

from genrec_hf.cli import main as cli
from genrec_hf.training import parse_selecting_on_validation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def best_selection(out_dir: Path) -> dict:
    """How the model was selected, as the script recorded it in training_info.json."""
    info = json.loads((out_dir / "training_info.json").read_text())
    assert info["best_checkpoint"], "no checkpoint was selected on validation"
    return info


@pytest.mark.parametrize("tune_mode", ["ilp", "full"])
def test_train_st2si_example_selects_on_validation_ndcg(tmp_path, monkeypatch, capsys, tune_mode):
    out_dir = tmp_path / "st2si"
    run_example("train_st2si.py", [
        "--backbone", "tiny", "--limit_users", "12", "--max_items", "4", "--tune_mode", tune_mode,
        "--output_dir", str(out_dir), "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
        "--use_cpu", "--disable_tqdm", "true",
    ], monkeypatch)
    info = best_selection(out_dir)
    evals = [e for e in info["validation_history"] if "ndcg@10" in e]
    assert len(evals) >= 2 and {e["epoch"] for e in evals} >= {1.0, 2.0}  # validated every epoch, no flag given
    assert info["metric_for_best_model"] == "ndcg@10"
    assert info["best_metric"] == max(e["ndcg@10"] for e in evals)
    assert info["method"] == "st2si" and info["test"]["users"] == 12 and "ndcg@10" in info["validation"]
    capsys.readouterr()
    assert cli(["evaluate", str(out_dir), "--split", "valid", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_users"] == 943


def test_train_st2si_example_keeps_a_metric_the_user_names(tmp_path, monkeypatch):
    out_dir = tmp_path / "st2si-loss"
    run_example("train_st2si.py", [
        "--backbone", "tiny", "--limit_users", "8", "--max_items", "3", "--output_dir", str(out_dir),
        "--num_train_epochs", "2", "--metric_for_best_model", "loss", "--use_cpu", "--disable_tqdm", "true",
    ], monkeypatch)
    info = best_selection(out_dir)
    losses = [e["loss"] for e in info["validation_history"] if "loss" in e]
    assert len(set(losses)) > 1 and info["metric_for_best_model"] == "loss"
    assert info["best_metric"] == min(losses)  # a loss is minimised, not maximised


def test_train_genrec_example_pretrains_then_selects_on_validation(tmp_path, monkeypatch):
    out_dir = tmp_path / "genrec"
    run_example("train_genrec.py", [
        "--backbone", "tiny", "--limit_users", "10", "--pretrain_epochs", "1", "--beam_size", "5",
        "--output_dir", str(out_dir), "--num_train_epochs", "2", "--use_cpu", "--disable_tqdm", "true",
    ], monkeypatch)
    info = best_selection(out_dir)
    evals = [e for e in info["validation_history"] if "ndcg@10" in e]
    assert {e["epoch"] for e in evals} >= {1.0, 2.0} and info["metric_for_best_model"] == "ndcg@10"
    assert info["best_metric"] == max(e["ndcg@10"] for e in evals)
    assert info["method"] == "genrec" and info["test"]["users"] == 10


def test_train_lancer_example_runs_every_stage_and_selects_on_validation(tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "lancer"
    run_example("train_lancer.py", [
        "--backbone", "tiny", "--limit_users", "10", "--eval_users", "3", "--knowledge_epochs", "1", "--max_steps", "2",
        "--max_item_tokens", "8", "--num_knowledge_tokens", "5", "--prompt_hidden_size", "32", "--beam_size", "3",
        "--stage2", "lora", "--stage2_epochs", "1", "--decode", "trie",
        "--output_dir", str(out_dir), "--num_train_epochs", "2", "--use_cpu", "--disable_tqdm", "true",
    ], monkeypatch)
    assert "split=test users=10 top-3 lists from generation (decode=trie)" in capsys.readouterr().out
    info = best_selection(out_dir)
    evals = [e for e in info["validation_history"] if "ndcg@10" in e]
    assert {e["epoch"] for e in evals} >= {1.0, 2.0} and info["metric_for_best_model"] == "ndcg@10"
    assert info["best_metric"] == max(e["ndcg@10"] for e in evals)
    assert info["method"] == "lancer" and info["test"]["users"] == 10 and info["validation"]["users"] == 3
    # stage 2 (LoRA) replaces stage 1 only when it is better on validation
    stages = info["stages"]
    assert stages["stage2"]["mode"] == "lora"
    assert stages["kept"] == ("stage2" if stages["stage2"]["best_metric"] > stages["stage1"]["best_metric"] else "stage1")
    config = json.loads((out_dir / "config.json").read_text())
    assert config["decode"] == "trie" and config["beam_size"] == 3 and bool(config["lora"]) == (stages["kept"] == "stage2")
    assert not list(out_dir.glob("trainer_checkpoints*"))
    # the saved item vectors are those of the saved weights: loading does not recompute them
    from transformers import AutoModel

    assert not AutoModel.from_pretrained(out_dir).item_vectors_stale()


@pytest.mark.parametrize("backbone,extra", [("glm-tiny", []), ("tiny", ["--lora_r", "4"]),
                                           ("glm-tiny", ["--tasks", "rating=1,sequential=1,direct=1"])])
def test_train_recsys_glm_example_pretrains_then_selects_on_validation(tmp_path, monkeypatch, capsys, backbone, extra):
    out_dir = tmp_path / "recsys_glm"
    run_example("train_recsys_glm.py", [
        "--backbone", backbone, *extra, "--limit_users", "10", "--eval_users", "3", "--pretrain_epochs", "1",
        "--beam_size", "3", "--max_items", "5", "--output_dir", str(out_dir), "--num_train_epochs", "2",
        "--use_cpu", "--disable_tqdm", "true",
    ], monkeypatch)
    assert "split=test users=10 top-3 lists from generation" in capsys.readouterr().out
    info = best_selection(out_dir)
    evals = [e for e in info["validation_history"] if "ndcg@10" in e]
    assert {e["epoch"] for e in evals} >= {1.0, 2.0} and info["metric_for_best_model"] == "ndcg@10"
    assert info["best_metric"] == max(e["ndcg@10"] for e in evals)
    assert info["method"] == "recsys_glm" and info["test"]["users"] == 10 and info["validation"]["users"] == 3
    lora = backbone == "tiny"
    assert info["tuning"]["mode"] == ("lora r=4" if lora else "full fine-tuning") and info["tuning"]["lora_merged"] == lora
    assert info["training"]["learning_rate"] == 5e-4  # the random-init default, not TrainingArguments' 5e-5
    assert info["training"]["tasks"] == (extra[1] if extra[:1] == ["--tasks"] else None)
    config = json.loads((out_dir / "config.json").read_text())
    assert config["beam_size"] == 3 and config["lora"] is None  # adapters merged before saving
    assert not list(out_dir.glob("trainer_checkpoints*"))
    capsys.readouterr()
    assert cli(["evaluate", str(out_dir), "--limit-users", "2", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_users"] == 2


@pytest.mark.parametrize("argv,expected", [
    ([], {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
          "metric_for_best_model": "ndcg@10", "greater_is_better": True}),
    (["--metric_for_best_model", "loss"], {"load_best_model_at_end": True, "greater_is_better": False}),
    (["--eval_strategy", "steps", "--eval_steps", "7"],
     {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 7, "save_steps": 7, "load_best_model_at_end": True}),
    (["--eval_strategy", "no"], {"eval_strategy": "no", "load_best_model_at_end": False}),
    (["--save_strategy=no"], {"save_strategy": "no", "load_best_model_at_end": False}),
    (["--load_best_model_at_end", "False"], {"eval_strategy": "epoch", "load_best_model_at_end": False}),
])
def test_trainer_flags_override_the_validation_selection_defaults(tmp_path, argv, expected):
    (args,) = parse_selecting_on_validation(HfArgumentParser(TrainingArguments), ["--output_dir", str(tmp_path), *argv])
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_quickstart_prints_where_it_saved_and_commands_that_work(tmp_path, monkeypatch, capsys):
    import re
    import shlex

    out_dir = tmp_path / "quick"
    run_example("quickstart.py", ["--backbone", "tiny", "--limit-users", "20", "--epochs", "1", "--show-users", "1",
                                  "--output-dir", str(out_dir)], monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    assert f"checkpoint saved to {out_dir.resolve()}" in lines
    recommend = next(line.strip() for line in lines if line.strip().startswith("genrec-hf recommend "))
    upload = next(line.strip() for line in lines if line.strip().startswith("genrec-hf upload "))
    assert recommend == f"genrec-hf recommend {out_dir.resolve()} --user 1"
    assert upload == f"genrec-hf upload {out_dir.resolve()} --repo-id <you>/<name> --dry-run"
    shown = next(line for line in lines if "ST2SI top-10 (unseen):" in line)

    # the printed command lists the same unseen top-10 the quickstart showed for that user
    assert cli(shlex.split(recommend)[1:]) == 0
    text = capsys.readouterr().out
    assert "top-10 (unseen):" in text
    titles = re.findall(r"^ *\d+\. +\S+  (.*)  \(-?[\d.]+\)$", text, flags=re.M)
    assert shown.split("(unseen): ", 1)[1] == repr(titles)
    assert cli(shlex.split(upload.replace("<you>/<name>", "me/st2si-ml100k"))[1:]) == 0
    assert "nothing pushed" in capsys.readouterr().out
