"""Training recipes: the epoch count is a ceiling and early stopping on validation ends the run."""

import json

import pytest

from genrec_hf.data import load_sequences
from genrec_hf.training.recipes import GenRecTrainingConfig, ST2SITrainingConfig, early_stopping, train_genrec, train_st2si


@pytest.fixture(scope="module")
def ml100k():
    return load_sequences("ml-100k")


def _validations(folder):
    info = json.loads((folder / "training_info.json").read_text())
    return info, [e for e in info["validation_history"] if "ndcg@10" in e]


def test_st2si_random_windows_stop_early_when_validation_stalls(ml100k, tmp_path):
    # a learning rate too small to move NDCG@10: the run must stop after 1 + patience validations
    cfg = ST2SITrainingConfig(backbone="tiny", max_items=5, epochs=40, learning_rate=1e-12, early_stopping_patience=2,
                              limit_users=12, progress=False)
    assert cfg.windows == "random" and cfg.cache_states
    train_st2si(ml100k, str(tmp_path), cfg, dataset_spec={"source": "ml-100k"})
    info, evals = _validations(tmp_path)
    assert len(evals) == 3 and evals[-1]["epoch"] == 3.0
    assert info["training"]["early_stopping_patience"] == 2 and info["training"]["windows"] == "random"


def test_genrec_stops_early_too(ml100k, tmp_path):
    cfg = GenRecTrainingConfig(backbone="tiny", pretrain_epochs=0, epochs=40, learning_rate=1e-12, early_stopping_patience=1,
                               limit_users=8, beam_size=4, progress=False)
    train_genrec(ml100k, str(tmp_path), cfg, dataset_spec={"source": "ml-100k"})
    _, evals = _validations(tmp_path)
    assert len(evals) == 2


def test_patience_must_be_non_negative():
    assert early_stopping(0) == []
    with pytest.raises(ValueError, match="early_stopping_patience must be >= 0"):
        early_stopping(-1)


def test_a_local_backbone_folder_is_recorded_by_name_only(ml100k, tmp_path):
    """training_info.json and the card travel with an upload: no machine path in either."""
    from transformers import AutoModel

    from genrec_hf.backbones import tiny_config, train_tokenizer

    folder = tmp_path / "private" / "my-backbone"
    tokenizer = train_tokenizer(ml100k.catalog.texts()[:200], vocab_size=500)
    AutoModel.from_config(tiny_config("llama", vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = ST2SITrainingConfig(backbone=str(folder), max_items=4, max_steps=1, windows="last", limit_users=6, progress=False)
    out = tmp_path / "ckpt"
    train_st2si(ml100k, str(out), cfg, dataset_spec={"source": "ml-100k"})
    info = json.loads((out / "training_info.json").read_text())
    assert info["training"]["backbone"] == "my-backbone"
    for name in ("training_info.json", "README.md", "config.json"):
        assert str(tmp_path) not in (out / name).read_text(), name


def test_lancer_stage2_straight_on_an_init_from_checkpoint(ml100k, tmp_path):
    from genrec_hf.training.recipes import LancerTrainingConfig, train_lancer

    with pytest.raises(ValueError, match="no sequence stage"):
        train_lancer(ml100k, str(tmp_path / "none"), LancerTrainingConfig(backbone="tiny", stage1_epochs=0, stage2="none"))
    common = dict(backbone="tiny", knowledge_epochs=0, limit_users=6, eval_users=4, beam_size=4, progress=False)
    train_lancer(ml100k, str(tmp_path / "s1"), LancerTrainingConfig(stage1_epochs=1, **common), dataset_spec={"source": "ml-100k"})
    cfg = LancerTrainingConfig(init_from=str(tmp_path / "s1"), stage1_epochs=0, stage2="full", stage2_epochs=1, **common)
    train_lancer(ml100k, str(tmp_path / "s2"), cfg, dataset_spec={"source": "ml-100k"})
    info = json.loads((tmp_path / "s2" / "training_info.json").read_text())
    assert list(info["stages"]) == ["stage2"] and info["stages"]["stage2"]["mode"] == "full"
    assert not (tmp_path / "s2-stage2").exists()
