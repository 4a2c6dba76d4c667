"""Training recipes: the epoch count is a ceiling and early stopping on validation ends the run."""

import json
from dataclasses import replace

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


def test_recsys_glm_pretrains_then_keeps_the_validation_best_checkpoint(ml100k, tmp_path, monkeypatch):
    import torch

    from genrec_hf import RecSysGLMForInfilling
    from genrec_hf.training.ranking import RecommenderEvalCallback
    from genrec_hf.training.recipes import RecSysGLMTrainingConfig, train_recsys_glm
    from genrec_hf.training.recsys_glm import RecSysGLMPretrainCollator

    batches = []
    pretrain_call = RecSysGLMPretrainCollator.__call__
    monkeypatch.setattr(RecSysGLMPretrainCollator, "__call__", lambda self, f: batches.append(len(f)) or pretrain_call(self, f))
    # validation runs (beam search) as usual; its NDCG@10 is then scripted so that epoch 2 is the best
    scripted, weights = iter([0.1, 0.3, 0.2]), []
    on_evaluate = RecommenderEvalCallback.on_evaluate

    def scripted_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        on_evaluate(self, args, state, control, metrics=metrics, model=model, **kwargs)
        metrics["eval_ndcg@10"] = state.log_history[-1]["eval_ndcg@10"] = next(scripted)
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(RecommenderEvalCallback, "on_evaluate", scripted_evaluate)
    cfg = RecSysGLMTrainingConfig(backbone="glm-tiny", pretrain_epochs=1, epochs=3, learning_rate=5e-3, batch_size=4,
                                  limit_users=8, eval_users=4, beam_size=4, max_items=5, progress=False)
    train_recsys_glm(ml100k, str(tmp_path), cfg, dataset_spec={"source": "ml-100k"})
    assert sum(batches) == 8  # one pretraining epoch: every user's window once
    info, evals = _validations(tmp_path)
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0] and info["best_metric"] == 0.3 == info["validation"]["ndcg@10"]
    assert info["best_checkpoint"] == f"checkpoint-{evals[1]['step']}"
    assert info["training"]["lora_r"] == 0 and info["tuning"]["mode"] == "full fine-tuning"  # random init
    assert not list(tmp_path.glob("trainer_checkpoints*"))
    saved = RecSysGLMForInfilling.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in weights[1].items())  # epoch 2's weights, not the last epoch's
    assert not all(torch.equal(saved[k], v) for k, v in weights[2].items())


def test_recsys_glm_lora_on_a_pretrained_folder_trains_adapters_and_new_tokens_then_merges(ml100k, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from genrec_hf.backbones import tiny_config, train_tokenizer
    from genrec_hf.training.recipes import RecSysGLMTrainingConfig, train_recsys_glm

    folder = tmp_path / "private" / "my-llama"  # a local folder stands for a pretrained LM
    tokenizer = train_tokenizer(ml100k.catalog.texts()[:300], vocab_size=600)
    AutoModel.from_config(tiny_config("llama", vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    before = load_file(folder / "model.safetensors")
    cfg = RecSysGLMTrainingConfig(backbone=str(folder), pretrain_epochs=1, max_steps=2, learning_rate=1e-2, limit_users=6,
                                  eval_users=2, beam_size=3, max_items=4, progress=False)
    out = tmp_path / "ckpt"
    model, _, _ = train_recsys_glm(ml100k, str(out), cfg, dataset_spec={"source": "ml-100k"})
    info = json.loads((out / "training_info.json").read_text())
    assert info["training"]["lora_r"] == 8 and info["training"]["backbone"] == "my-llama"  # the paper's rank; no path
    assert info["tuning"] == {"pretrained_backbone": True, "mode": "lora r=8", "lora_merged": True, "new_token_rows_trained": 5}
    assert json.loads((out / "config.json").read_text())["lora"] is None and model.config.lora is None
    after = load_file(out / "model.safetensors")
    old, new = before["embed_tokens.weight"], after["model.embed_tokens.weight"]
    assert torch.equal(new[: old.shape[0]], old)  # the LM's own token rows are kept exactly
    assert new.shape[0] == old.shape[0] + 5
    changed = [k for k in before if k != "embed_tokens.weight" and not torch.equal(before[k], after["model." + k])]
    assert any("q_proj" in k for k in changed) and not any("norm" in k for k in changed)  # LoRA merged into its targets only
    for name in ("training_info.json", "README.md", "config.json"):
        assert str(tmp_path) not in (out / name).read_text(), name


def test_recsys_glm_on_a_thudm_glm_folder(ml100k, tmp_path):
    """A folder as THUDM ships GLM (config.json with model_type "glm", THUDM key names, sop / eop tokens)
    loads through from_thudm_glm, with --lm-layers cutting its blocks."""
    import torch

    from genrec_hf.backbones import train_tokenizer
    from genrec_hf.models import GLMTextConfig, RecSysGLMConfig, RecSysGLMForInfilling
    from genrec_hf.training.recipes import RecSysGLMTrainingConfig, train_recsys_glm

    folder = tmp_path / "glm-toy"
    tokenizer = train_tokenizer(ml100k.catalog.texts()[:300], vocab_size=600)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[MASK]", "[sMASK]", "[gMASK]", "<|startofpiece|>", "<|endofpiece|>"]})
    text = GLMTextConfig(vocab_size=len(tokenizer) + 3, hidden_size=64, num_layers=3, num_attention_heads=2, max_sequence_length=256)
    glm = RecSysGLMForInfilling(RecSysGLMConfig(text_config=text)).glm  # THUDM's own key names, under glm.
    folder.mkdir()
    torch.save({f"glm.{k}": v for k, v in glm.state_dict().items()}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "glm", "architectures": ["GLMModel"], "num_layers": 3,
                                                    "hidden_size": 64, "num_attention_heads": 2, "max_sequence_length": 256}))
    tokenizer.save_pretrained(folder)
    cfg = RecSysGLMTrainingConfig(backbone=str(folder), lm_layers=2, lora_r=0, pretrain_epochs=0, max_steps=1, limit_users=4,
                                  eval_users=2, beam_size=3, max_items=4, progress=False)
    model, processor, _ = train_recsys_glm(ml100k, str(tmp_path / "ckpt"), cfg, dataset_spec={"source": "ml-100k"})
    text = model.config.text_config
    assert (text.model_type, text.num_layers, text.num_attention_heads, text.max_sequence_length) == ("recsys_glm_text", 2, 2, 256)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 3  # THUDM's padded vocabulary, not shrunk
    assert processor.settings["max_length"] == 256  # bounded by the position tables
    assert model.config.start_token_id == tokenizer.convert_tokens_to_ids("<|startofpiece|>")  # GLM's own sop / eop
    assert model.config.end_token_id == tokenizer.convert_tokens_to_ids("<|endofpiece|>")


def test_recsys_glm_on_a_pretrained_lm_keeps_its_untied_head(catalog, tmp_path):
    """A rotary folder is loaded with its head: an untied pretrained lm_head is kept (not replaced by
    the input embedding); a tied LM gets no head of its own; a folder without a head (a base
    model) starts its head from the input embedding."""
    import torch
    from transformers import AutoModelForCausalLM

    from genrec_hf import SeqRecProcessor
    from genrec_hf.backbones import load_glm_backbone, tiny_config, train_tokenizer
    from genrec_hf.training.recipes import build_recsys_glm

    tokenizer = train_tokenizer(catalog.texts(), vocab_size=400)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=len(tokenizer), tie_word_embeddings=False))
    tied = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=len(tokenizer), tie_word_embeddings=True))
    for name, model in (("untied", lm), ("tied", tied), ("base", lm.model)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    rows = len(tokenizer)
    for name, head in (("untied", lm.lm_head.weight), ("tied", None), ("base", lm.model.embed_tokens.weight)):
        backbone, tok, pretrained = load_glm_backbone(str(tmp_path / name), num_layers=1)
        model = build_recsys_glm(backbone, SeqRecProcessor(tok, catalog, method="recsys_glm"))
        assert pretrained and model.config.text_config.num_hidden_layers == 1
        if head is None:
            assert model.get_output_embeddings() is None, name  # the output layer is the input embedding
        else:
            assert torch.equal(model.lm_head.weight[:rows], head), name


def test_recsys_glm_multi_task_checkpoint_answers_every_family(ml100k, tmp_path, monkeypatch):
    """Issue 11: one multi-task fine-tuning run; the saved checkpoint (model + processor, reloaded)
    answers rating, sequential, direct (yes / no and choice) and text prompts; training drew seen
    templates only."""
    import torch

    from genrec_hf import RecSysGLMForInfilling
    from genrec_hf.models.recsys_glm.processing_recsys_glm import RecSysGLMProcessor
    from genrec_hf.models.recsys_glm.task_prompts import RecSysGLMTasks
    from genrec_hf.training.recipes import RecSysGLMTrainingConfig, train_recsys_glm
    from genrec_hf.training.recsys_glm import RecSysGLMMultiTaskCollator

    used = []
    encode_row = RecSysGLMMultiTaskCollator.encode_row
    monkeypatch.setattr(RecSysGLMMultiTaskCollator, "encode_row", lambda self, r: used.append(encode_row(self, r)) or used[-1])
    cfg = RecSysGLMTrainingConfig(backbone="glm-tiny", pretrain_epochs=0, epochs=1, batch_size=4, limit_users=6, eval_users=3,
                                  beam_size=4, max_items=5, progress=False, choice_negatives=4,
                                  tasks={"rating": 1, "sequential": 1, "direct": 1}, task_rows_per_epoch=24,
                                  user_features=["age", "occupation"])
    with pytest.raises(ValueError, match=r"unknown user field\(s\) \['salary'\]"):
        train_recsys_glm(ml100k, str(tmp_path / "bad"), replace(cfg, user_features=["salary"]))
    train_recsys_glm(ml100k, str(tmp_path), cfg, dataset_spec={"source": "ml-100k"})
    trained = [r["template_id"] for r in used if "template_id" in r]
    assert len(trained) == 24 and {r["task"] for r in used if "task" in r} == {"rating", "sequential", "direct"}
    model = RecSysGLMForInfilling.from_pretrained(tmp_path).eval()
    processor = RecSysGLMProcessor.from_pretrained(tmp_path)
    assert set(trained) <= set(processor.template_ids(split="seen"))
    assert processor.settings["user_table"]["1"] == {"age": "24", "occupation": "technician"}  # the chosen fields
    info = json.loads((tmp_path / "training_info.json").read_text())
    assert info["training"]["tasks"] == {"rating": 1, "sequential": 1, "direct": 1}

    tasks = RecSysGLMTasks(model, processor)
    test = ml100k.splits["test"].select(range(2))
    users, histories, targets = test["user"], test["history"], test["target"]
    rating = tasks.predict_rating(users, histories, targets, template_id="rating-4")  # held out: zero-shot
    assert rating.shape == (2,) and bool(((rating >= 1) & (rating <= 5)).all())
    candidates = [processor.sample_candidates(t, h, num_negatives=4, rng=0) for t, h in zip(targets, histories)]
    for template in ("direct-1", "direct-5"):
        assert tasks.rank_candidates(users, histories, candidates, template_id=template).shape == (2, 5)
    top = tasks.recommend(users, histories, top_k=3, template_id="sequential-3").item_ids
    assert top.shape == (2, 3) and bool((top >= 0).all())
    assert model.recommend(**processor(histories), top_k=3).item_ids.shape == (2, 3)  # recommend() keeps working
    texts = tasks.explain(users, targets, max_new_tokens=4, num_beams=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert torch.isfinite(rating).all()
