"""Checkpoint folders are written atomically (issue 13): a process killed while saving leaves the
earlier folder or none, and the unfinished folder it leaves neither loads nor uploads."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel

from conftest import make_catalog
from genrec_hf import SASRecConfig, SASRecForSeqRec, SeqRecProcessor
from genrec_hf.hub import check_checkpoint
from genrec_hf.models.saving import INCOMPLETE_MARKER
from genrec_hf.training.recipes import save_checkpoint


def tiny():
    torch.manual_seed(0)
    catalog = make_catalog(12)
    model = SASRecForSeqRec(SASRecConfig(num_items=len(catalog), max_items=5, hidden_size=8, inner_size=16))
    return model, SeqRecProcessor(None, catalog, method="sasrec", max_items=5)


def test_save_replaces_the_folder_in_one_step_and_leaves_nothing_beside_it(tmp_path):
    model, processor = tiny()
    target = tmp_path / "ckpt"
    (target / "trainer_checkpoints" / "checkpoint-3").mkdir(parents=True)  # what training leaves there
    (target / "stale.txt").write_text("from an earlier run")
    save_checkpoint(model, processor, str(target), info={"method": "sasrec"})
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no staging or replaced folder left
    assert not (target / "trainer_checkpoints").exists() and not (target / "stale.txt").exists()
    assert not (target / INCOMPLETE_MARKER).exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o777 & ~umask  # not mkdtemp's owner-only mode
    check_checkpoint(str(target))
    assert isinstance(AutoModel.from_pretrained(target), SASRecForSeqRec)


def test_a_save_that_fails_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    model, processor = tiny()
    target = tmp_path / "ckpt"
    save_checkpoint(model, processor, str(target), info={"method": "sasrec", "run": 1})
    before = {n: (target / n).read_bytes() for n in os.listdir(target)}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(processor, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model, processor, str(target), info={"method": "sasrec", "run": 2})
    assert {n: (target / n).read_bytes() for n in os.listdir(target)} == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_a_kill_during_save_leaves_an_unfinished_folder_that_neither_loads_nor_uploads(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_atomic_save import tiny
        from genrec_hf.training.recipes import save_checkpoint
        model, processor = tiny()
        processor.save_pretrained = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # dies mid-save
        save_checkpoint(model, processor, {str(tmp_path / "ckpt")!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    assert not (tmp_path / "ckpt").exists()
    (left,) = [tmp_path / n for n in os.listdir(tmp_path)]
    assert left.name.startswith(".ckpt.saving-") and (left / INCOMPLETE_MARKER).is_file()
    assert (left / "model.safetensors").is_file()  # the weights were written: only the marker stops a load
    with pytest.raises(OSError, match="unfinished save"):
        AutoModel.from_pretrained(left)
    with pytest.raises(OSError, match="unfinished save"):
        SASRecForSeqRec.from_pretrained(left)
    with pytest.raises(ValueError, match="unfinished save"):
        check_checkpoint(str(left))


def test_under_zero3_every_rank_gathers_and_rank_0_writes_the_gathered_weights(tmp_path, monkeypatch):
    """DeepSpeed ZeRO-3 partitions each parameter over the ranks: save_checkpoint must gather them
    (a collective) before rank 0 writes, or it writes the empty local shards. DeepSpeed is not
    installed here: a stand-in GatheredParameters fills the parameters while it is entered."""
    import importlib.machinery
    import sys
    import types
    from contextlib import contextmanager

    import transformers.integrations
    from safetensors.torch import load_file

    model, processor = tiny()
    entered = []

    @contextmanager
    def gathered(params, modifier_rank=None):
        entered.append(len(params))
        kept = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p in params:
                p.fill_(7.0)  # "the whole tensor", as gathered from the shards
        yield
        with torch.no_grad():
            for p, k in zip(params, kept):
                p.copy_(k)

    deepspeed = types.ModuleType("deepspeed")
    deepspeed.__spec__ = importlib.machinery.ModuleSpec("deepspeed", None)  # not installed: only found by import
    deepspeed.zero = types.SimpleNamespace(GatheredParameters=gathered)
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    save_checkpoint(model, processor, str(tmp_path / "ckpt"))
    assert entered == [len(list(model.parameters()))]
    saved = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert all(bool((t == 7.0).all()) for t in saved.values())  # the gathered values, not the local ones
    assert not any(bool((p == 7.0).all()) for p in model.parameters())  # the model is left as it was
