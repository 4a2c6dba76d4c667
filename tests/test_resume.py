"""A training run killed with SIGKILL mid-run and rerun with --resume ends with the same weights and
validation history as an uninterrupted run (issue 13)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_p5_sequences
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_p5_sequences(tmp_path_factory.mktemp("data") / "sequences.txt", num_users=300, length=12)


def train_cmd(dataset, output_dir, *extra, method="sasrec"):
    flags = ["--epochs", "6", "--batch-size", "4"] if method == "sasrec" else [
        "--pretrain-epochs", "2", "--epochs", "3", "--batch-size", "8", "--beam-size", "5"]
    return [sys.executable, "-m", "genrec_hf.cli", "train", "--method", method, "--dataset", str(dataset), "--format", "p5",
            "--k-core", "0", "--max-items", "10", "--seed", "3", "--no-progress", "--skip-test",
            "--output-dir", str(output_dir), *flags, *extra]


def kill_and_resume(dataset, tmp_path, work_name, *flags, method="sasrec"):
    """Train once whole; train again, SIGKILL it once `work_name` holds a complete Trainer
    checkpoint, rerun with --resume. Returns the two output folders."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(train_cmd(dataset, whole, *flags, method=method), env=ENV, check=True, capture_output=True, timeout=900)

    proc = subprocess.Popen(train_cmd(dataset, killed, *flags, method=method), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    work = killed / work_name
    deadline = time.monotonic() + 600
    while not (work.is_dir() and any((work / n / "trainer_state.json").is_file() for n in os.listdir(work))):
        assert proc.poll() is None, f"the run ended before its first checkpoint in {work_name}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # once the stage's first epoch is saved: mid-run
    proc.wait()
    assert not (killed / "config.json").exists(), "the run finished before the kill: the test proves nothing"

    resumed = subprocess.run(train_cmd(dataset, killed, *flags, "--resume", method=method), env=ENV, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    return whole, killed


def assert_same_result(whole, killed, epochs):
    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-6, name
    info_a, info_b = (json.loads((d / "training_info.json").read_text()) for d in (whole, killed))
    assert info_a["validation_history"] == info_b["validation_history"]
    assert info_a["best_checkpoint"] == info_b["best_checkpoint"]
    assert len({entry["epoch"] for entry in info_a["validation_history"]}) == epochs


@pytest.mark.parametrize("windows", ["all", "random"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(dataset, tmp_path, windows):
    # random: a fresh window per user and epoch, drawn from (seed, row, epoch); the resumed process
    # must draw the killed run's later epochs, not restart at the first epoch's draws
    whole, killed = kill_and_resume(dataset, tmp_path, "trainer_checkpoints", "--windows", windows)
    assert_same_result(whole, killed, epochs=6)


@pytest.mark.parametrize("stage", ["trainer_checkpoints-pretrain", "trainer_checkpoints"])
def test_a_killed_genrec_run_resumes_in_either_stage(dataset, tmp_path, stage):
    # killed while pretraining: pretraining resumes, then finetuning runs; killed while finetuning: its
    # checkpoint holds the pretrained weights and pretraining is skipped. The collator draws its masks,
    # cut points and unknown-user rows by (seed, epoch, row), so the resumed epochs draw the same
    whole, killed = kill_and_resume(dataset, tmp_path, stage, "--finetune-targets", "random", method="genrec")
    assert_same_result(whole, killed, epochs=3)


def test_resume_is_refused_for_the_staged_recipes(dataset, tmp_path, capsys):
    from genrec_hf.cli import main

    assert main(["train", "--method", "lancer", "--resume", "--output-dir", str(tmp_path / "g")]) == 2
    assert capsys.readouterr().err.strip() == "error: --resume applies only to --method st2si or genrec or sasrec or gru4rec"


def test_resume_skips_a_checkpoint_the_kill_left_half_written(tmp_path):
    from genrec_hf.training.recipes import _last_complete_checkpoint

    assert _last_complete_checkpoint(str(tmp_path / "missing")) is None
    for step, state in ((10, '{"global_step": 10}'), (20, '{"global_st'), (30, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-9").mkdir()  # numbered, not sorted as text: 10 is newer than 9
    (tmp_path / "checkpoint-9" / "trainer_state.json").write_text("{}")
    assert _last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")
