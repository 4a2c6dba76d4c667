import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, Trainer, TrainingArguments

from genrec_hf import SeqRecPipeline, SeqRecProcessor, ST2SIConfig, ST2SIForItemPrediction
from genrec_hf.models.st2si.modeling_st2si import gather_queries
from genrec_hf.training import RankingMetrics, SeqRecCollator, alignment_rows, extract_query_states, sequence_rows

HISTORIES = [[0, 1, 2], [3, 4, 5, 6, 7], [8]]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "opt"])
def test_shapes_for_any_decoder(st2si_factory, model_type):
    model, processor = st2si_factory(model_type)
    inputs = processor(HISTORIES, targets=[3, 8, 9])
    out = model(**inputs)
    assert out.logits.shape == (3, 5, len(processor.catalog))
    assert out.query_mask.sum(dim=1).tolist() == [3, 5, 1]
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model.item_scores(**inputs).shape == (3, len(processor.catalog))


def test_query_positions_and_targets_align(st2si_factory):
    model, processor = st2si_factory()
    tokens = processor.item_tokens()
    q, bos = processor.query_token_id, processor.tokenizer.bos_token_id
    inputs = processor([[4, 9, 2]], targets=[7], return_tensors=None)
    expected = [bos] + tokens[4] + [q] + tokens[9] + [q] + tokens[2] + [q]
    assert inputs["input_ids"][0] == expected
    # query j is labelled with the item that follows the j-th history item
    assert inputs["labels"][0] == [9, 2, 7]
    # the states the model reads are the backbone's at exactly those [Q] positions
    ids = torch.tensor(inputs["input_ids"])
    hidden = model.backbone(input_ids=ids).last_hidden_state
    positions = [i for i, t in enumerate(expected) if t == q]
    states, mask = model.encode_queries(ids)
    assert torch.allclose(states[0], hidden[0, positions], atol=1e-6)
    assert mask.all()


def test_gather_queries_handles_ragged_rows():
    hidden = torch.arange(2 * 6, dtype=torch.float).view(2, 6, 1)
    is_query = torch.tensor([[0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    states, mask = gather_queries(hidden, is_query)
    assert states[0, :, 0].tolist() == [1.0, 4.0]
    assert states[1, 0, 0].item() == 9.0
    assert mask.tolist() == [[True, True], [True, False]]


def test_single_query_ablation_puts_one_query_at_the_end(st2si_factory):
    model, processor = st2si_factory(multi_query=False)
    inputs = processor([[4, 9, 2]], targets=[7], return_tensors=None)
    assert inputs["input_ids"][0].count(processor.query_token_id) == 1
    assert inputs["input_ids"][0][-1] == processor.query_token_id
    assert inputs["labels"][0] == [7]
    rows = sequence_rows(processor, [[4, 9, 2]])
    assert [r["labels"] for r in rows] == [[9], [2]]  # one row per prefix


def test_alignment_instruction_rows(st2si_factory):
    model, processor = st2si_factory()
    rows = alignment_rows(processor, [5, 11])
    assert [r["labels"] for r in rows] == [[5], [11]]
    text = processor.tokenizer.decode(rows[0]["input_ids"], skip_special_tokens=False)
    assert "Please give the ID of the following item:" in text
    assert processor.catalog.text(5) in text
    assert rows[0]["input_ids"][-1] == processor.query_token_id


def test_loss_falls_on_a_toy_task(st2si_factory):
    model, processor = st2si_factory()
    n = len(processor.catalog)
    # deterministic transitions: after item i comes item (i + 5) % n
    sequences = [[(s + 5 * k) % n for k in range(6)] for s in range(n)]
    batch = processor([seq[:-1] for seq in sequences], targets=[seq[-1] for seq in sequences])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(60):
        loss = model(**batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    model.eval()
    top = model.recommend(**processor([[0, 5]]), top_k=1).item_ids
    assert top.item() == 10


def test_ilp_mode_trains_only_the_ilp(st2si_factory):
    model, processor = st2si_factory(tune_mode="ilp")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"ilp.weight"}  # no bias by default (eq. 5)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    ilp_before = model.ilp.weight.detach().clone()
    args = TrainingArguments(output_dir="/tmp/unused", max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no")
    rows = sequence_rows(processor, [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10]])
    ds = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    Trainer(model=model, args=args, train_dataset=ds, data_collator=SeqRecCollator(processor)).train()
    after = model.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)
    assert not torch.equal(ilp_before, model.ilp.weight)


def test_cached_states_give_the_same_logits(st2si_factory):
    model, processor = st2si_factory(tune_mode="ilp")
    model.eval()
    rows = sequence_rows(processor, HISTORIES[:2])
    states = extract_query_states(model, processor, rows, batch_size=1, progress=False)
    batch = processor.pad({"input_ids": [r["input_ids"] for r in rows]})
    direct = model(**batch).logits
    for i, row_states in enumerate(states):
        from_cache = model(query_hidden_states=row_states).logits
        assert torch.allclose(from_cache, direct[i, : len(row_states)], atol=1e-5)
    model.set_tune_mode("full")
    model.train()
    with pytest.raises(ValueError, match="tune_mode='ilp'"):
        model(query_hidden_states=states[0], labels=torch.tensor(rows[0]["labels"]))


def test_trainer_runs_two_steps_with_validation_metrics(st2si_factory, tmp_path):
    model, processor = st2si_factory()
    rows = sequence_rows(processor, [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10]]) + alignment_rows(processor, [0, 1])
    train = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    valid_rows = [processor.encode([0, 1, 2], 3), processor.encode([4, 5], 6)]
    valid = [{"input_ids": r["input_ids"], "labels": [-100] * (len(r["labels"]) - 1) + [r["labels"][-1]]} for r in valid_rows]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                             report_to="none", use_cpu=True, eval_strategy="steps", eval_steps=2, save_strategy="no")
    from genrec_hf.training import keep_labelled_logits

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
                      data_collator=SeqRecCollator(processor), compute_metrics=RankingMetrics(),
                      preprocess_logits_for_metrics=keep_labelled_logits)
    trainer.train()
    assert trainer.state.global_step == 2
    metrics = trainer.evaluate()
    for key in ("eval_hr@10", "eval_ndcg@10", "eval_mrr"):
        assert 0.0 <= metrics[key] <= 1.0
    # the same numbers as scoring those two users directly
    model.eval()
    from genrec_hf.metrics import rank_metrics

    scores = model.item_scores(**processor([[0, 1, 2], [4, 5]]))
    assert metrics["eval_mrr"] == pytest.approx(rank_metrics(scores, torch.tensor([3, 6]))["mrr"], abs=1e-5)


def test_round_trip_gives_identical_logits(st2si_factory, tmp_path):
    model, processor = st2si_factory("gpt2")
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "modeling_st2si.py").is_file()  # remote-code files travel with the weights
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "st2si" and config["auto_map"]["AutoModel"].endswith("ST2SIForItemPrediction")
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, ST2SIForItemPrediction)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ST2SIConfig)
    loaded_processor = SeqRecProcessor.from_pretrained(tmp_path)
    inputs = processor(HISTORIES)
    assert torch.equal(inputs["input_ids"], loaded_processor(HISTORIES)["input_ids"])
    assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)


def test_remote_code_load_without_genrec_hf(st2si_factory, tmp_path):
    """Model and processor load as Hub remote code where genrec_hf is not installed, and the
    processor gives exactly the package's inputs (model saved first; GenRec's test saves the processor first)."""
    model, processor = st2si_factory()
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_st2si.ST2SIProcessor"}
    for name in ("processing_st2si.py", "processing_base.py", "catalog.py"):  # copies, not links
        assert (tmp_path / "ckpt" / name).is_file() and not (tmp_path / "ckpt" / name).is_symlink()
    inputs = processor(HISTORIES, targets=[3, 8, 9])
    rec = model.recommend(**processor(HISTORIES), top_k=5, exclude_history=True)
    torch.save({"inputs": dict(inputs), "logits": model(**inputs).logits, "rec": rec.item_ids,
                "alignment": dict(processor.alignment_inputs([5, 11]))}, tmp_path / "expected.pt")
    (tmp_path / "titles.json").write_text(json.dumps(processor.decode_items(rec.item_ids)))
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["genrec_hf"] = None  # make `import genrec_hf` fail, as where it is not installed
        try:
            import genrec_hf
            raise SystemExit("genrec_hf is importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModel, AutoProcessor
        ckpt = {str(tmp_path / 'ckpt')!r}
        model = AutoModel.from_pretrained(ckpt, trust_remote_code=True).eval()
        assert "genrec_hf" not in type(model).__module__, type(model).__module__
        processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
        assert type(processor).__name__ == "ST2SIProcessor" and "genrec_hf" not in type(processor).__module__, type(processor)
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        inputs = processor({HISTORIES!r}, targets=[3, 8, 9])
        assert set(inputs) == set(expected["inputs"]), sorted(inputs)
        for key, value in expected["inputs"].items():
            assert torch.equal(inputs[key], value), key
        alignment = processor.alignment_inputs([5, 11])
        assert all(torch.equal(alignment[k], v) for k, v in expected["alignment"].items())
        logits = model(**inputs).logits
        assert torch.equal(logits, expected["logits"]), (logits - expected["logits"]).abs().max()
        out = model.recommend(**processor({HISTORIES!r}), top_k=5, exclude_history=True)
        assert torch.equal(out.item_ids, expected["rec"]), (out.item_ids, expected["rec"])
        assert processor.decode_items(out.item_ids) == json.load(open({str(tmp_path / 'titles.json')!r}))
        print("remote code ok", type(model).__module__)
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code ok" in result.stdout


def test_recommend_excludes_history_and_ranks_the_catalog(st2si_factory):
    model, processor = st2si_factory()
    model.eval()
    inputs = processor(HISTORIES)
    out = model.recommend(**inputs, top_k=len(processor.catalog))
    assert out.item_ids.shape == (3, len(processor.catalog))
    assert all(sorted(row) == list(range(len(processor.catalog))) for row in out.item_ids.tolist())
    assert torch.all(out.scores[:, :-1] >= out.scores[:, 1:])
    excl = model.recommend(**inputs, top_k=5, exclude_history=True)
    for history, row in zip(HISTORIES, excl.item_ids.tolist()):
        assert not set(history) & set(row)
    assert processor.decode_items(excl.item_ids)[0][0] == processor.catalog.text(excl.item_ids[0, 0].item())


def test_bad_inputs_are_named(st2si_factory, catalog, tokenizer_factory):
    model, processor = st2si_factory()
    with pytest.raises(ValueError, match="empty history in row 1"):
        processor([[1, 2], []])
    with pytest.raises(ValueError, match=f"unknown item id {len(catalog)} in row 0"):
        processor([[1, len(catalog)]])
    with pytest.raises(ValueError, match="unknown item id -3"):
        processor([[-3]])
    with pytest.raises(ValueError, match="list of histories"):
        processor([1, 2, 3])
    with pytest.raises(ValueError, match="unknown item id 99 in labels"):
        model(**processor([[1, 2]]), labels=torch.tensor([[3, 99]]))
    from genrec_hf.data import ItemCatalog

    other = ItemCatalog([str(i) for i in range(len(catalog) + 3)], [{"title": f"x {i}"} for i in range(len(catalog) + 3)])
    with pytest.raises(ValueError, match=rf"catalog size mismatch: the model predicts {len(catalog)} items"):
        SeqRecPipeline(model, SeqRecProcessor(tokenizer_factory(), other))
    with pytest.raises(ValueError, match="tune_mode must be one of"):
        ST2SIConfig(tune_mode="lora")
    with pytest.raises(FileNotFoundError, match="no processor"):
        SeqRecProcessor.from_pretrained("/nonexistent/ckpt")


def test_long_history_is_cut_from_the_left_by_whole_items(st2si_factory):
    model, processor = st2si_factory(max_items=3)
    history = list(range(10))
    row = processor.encode(history)
    assert processor.window(history) == [7, 8, 9]
    assert row["input_ids"].count(processor.query_token_id) == 3
    assert row["history_item_ids"] == history  # exclusion still sees everything
    # a token budget drops whole older items, never part of one
    tokens = processor.item_tokens()
    budget = 1 + len(tokens[8]) + 1 + len(tokens[9]) + 1
    _, tight = st2si_factory(max_items=50, max_length=budget + 1)
    row = tight.encode(history)
    assert tight.window(history) == [8, 9]
    assert row["input_ids"] == [tight.tokenizer.bos_token_id] + tokens[8] + [tight.query_token_id] + tokens[9] + [tight.query_token_id]


def test_item_text_cannot_forge_a_query_token(tokenizer_factory):
    from genrec_hf.data import ItemCatalog

    cat = ItemCatalog(["1", "2"], [{"title": "the [Q] movie"}, {"title": "plain"}])
    processor = SeqRecProcessor(tokenizer_factory(), cat)
    row = processor.encode([0, 1])
    assert row["input_ids"].count(processor.query_token_id) == 2


def test_auto_processor_loads_the_seqrec_processor(st2si_factory, tmp_path):
    from transformers import AutoProcessor

    model, processor = st2si_factory(max_items=4)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SeqRecProcessor)
    assert loaded.settings["max_items"] == 4 and loaded.query_token_id == processor.query_token_id
    assert AutoProcessor.from_pretrained(tmp_path, max_items=2).settings["max_items"] == 2


def test_backbone_from_a_local_folder_and_causal_lm_checkpoint(tmp_path, catalog, tokenizer_factory):
    """A local HF folder (here a tiny GPT-2 *LMHead* checkpoint) loads through the same from_pretrained path."""
    from transformers import AutoModelForCausalLM

    from genrec_hf.backbones import load_backbone, tiny_config

    tokenizer = tokenizer_factory()
    lm = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tokenizer)))
    lm.save_pretrained(tmp_path / "gpt2-tiny")
    tokenizer.save_pretrained(tmp_path / "gpt2-tiny")
    backbone, tok = load_backbone(str(tmp_path / "gpt2-tiny"))
    assert torch.equal(backbone.get_input_embeddings().weight, lm.transformer.wte.weight)
    processor = SeqRecProcessor(tok, catalog)
    model = ST2SIForItemPrediction.from_backbone(lm, len(catalog), processor.query_token_id, vocab_size=len(tok))
    assert type(model.backbone).__name__ == "GPT2Model"  # the LM head is dropped, the decoder kept
    assert model.backbone.get_input_embeddings().weight.shape[0] == len(tok)
    assert model(**processor(HISTORIES)).logits.shape[-1] == len(catalog)
    with pytest.raises(FileNotFoundError, match="unknown backbone 'no-such-model'"):
        load_backbone("no-such-model")


def test_recommend_pads_with_minus_one_when_history_leaves_too_few_items(st2si_factory, catalog):
    model, processor = st2si_factory()
    model.eval()
    history = list(range(len(catalog) - 2))  # only two unseen items remain
    out = model.recommend(**processor([history]), top_k=5, exclude_history=True)
    row = out.item_ids[0].tolist()
    assert sorted(row[:2]) == [len(catalog) - 2, len(catalog) - 1]
    assert row[2:] == [-1, -1, -1] and torch.isinf(out.scores[0, 2:]).all()


def test_default_budget_is_50_items_of_at_most_32_tokens(tokenizer_factory):
    from genrec_hf.data import ItemCatalog

    long_titles = [" ".join(f"word{(i * 13 + j) % 97}" for j in range(40)) for i in range(90)]
    cat = ItemCatalog([str(i) for i in range(90)], [{"title": t} for t in long_titles])
    processor = SeqRecProcessor(tokenizer_factory(), cat)
    assert all(len(t) == 32 for t in processor.item_tokens())  # every title is longer: cut to 32
    history = list(range(90))
    row = processor.encode(history)
    assert processor.window(history) == history[-50:]
    assert row["input_ids"].count(processor.query_token_id) == 50
    assert len(row["input_ids"]) == 1 + 50 * (32 + 1)


def test_loading_a_model_with_another_catalog_size_is_refused(st2si_factory, tmp_path, catalog, tokenizer_factory):
    from genrec_hf.data import ItemCatalog

    model, _ = st2si_factory()
    model.save_pretrained(tmp_path)
    bigger = ItemCatalog([str(i) for i in range(len(catalog) + 6)], [{"title": f"x {i}"} for i in range(len(catalog) + 6)])
    SeqRecProcessor(tokenizer_factory(), bigger).save_pretrained(tmp_path)
    weights = (tmp_path / "model.safetensors").read_bytes()
    message = rf"catalog size mismatch: .* has num_items={len(catalog)} but the processor's catalog has {len(catalog) + 6}"
    with pytest.raises(ValueError, match=message):
        SeqRecProcessor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        SeqRecPipeline.from_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == weights  # nothing saved is touched


def test_gguf_flagged_backbone_saves_as_plain_safetensors(catalog, tokenizer_factory, tmp_path):
    """A GGUF-loaded model carries a quantizer and quantization_config, and save_pretrained refuses it;
    from_backbone drops the flag (the weights are already dequantized floats)."""
    from transformers import AutoModel

    from genrec_hf.backbones import tiny_config

    tokenizer = tokenizer_factory()
    backbone = AutoModel.from_config(tiny_config("llama", vocab_size=len(tokenizer)))
    backbone.config.quantization_config = {"quant_method": "gguf"}
    backbone.hf_quantizer = object()  # stands in for the GGUF quantizer
    processor = SeqRecProcessor(tokenizer, catalog)
    model = ST2SIForItemPrediction.from_backbone(backbone, len(catalog), processor.query_token_id, vocab_size=len(tokenizer))
    model.eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "quantization_config" not in config["text_config"]
    loaded = AutoModel.from_pretrained(tmp_path)
    inputs = processor(HISTORIES)
    assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
