import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, LogitsProcessor, LogitsProcessorList, Trainer, TrainingArguments

from genrec_hf import SeqRecPipeline, SeqRecProcessor
from genrec_hf.backbones import load_bart
from genrec_hf.data import ItemCatalog, load_sequences
from genrec_hf.models import GenRecConfig, GenRecForConditionalGeneration
from genrec_hf.training.genrec import GenRecCollator, genrec_datasets

USERS = [str(u) for u in range(1, 9)]


@pytest.fixture
def genrec_factory(catalog):
    def build(users=USERS, **settings):
        torch.manual_seed(0)
        texts = [f"item_{i}" for i in range(len(catalog))] + [f"user_{r}" for r in range(len(users) + 1)] + ["user_unk"]
        bart, tokenizer = load_bart("tiny", texts, vocab_size=300)
        processor = SeqRecProcessor(tokenizer, catalog, method="genrec", users=users, **settings)
        table = processor.item_token_table()
        model = GenRecForConditionalGeneration.from_bart(
            bart, processor.num_users, processor.num_items, vocab_size=len(tokenizer), max_item_tokens=table.shape[1], beam_size=6,
        )
        model.set_item_tokens(table)
        return model, processor

    return build


def _spans(processor, ids, text):
    """Positions of the tokens of ` text` inside ids."""
    piece = processor.tokenize([text], None)[0]
    for start in range(len(ids) - len(piece) + 1):
        if ids[start:start + len(piece)] == piece:
            return list(range(start, start + len(piece)))
    raise AssertionError(f"{text!r} not in the input")


def test_id_embeddings_reach_every_subtoken_of_an_entity_and_nothing_else(genrec_factory):
    model, processor = genrec_factory()
    history = [3, 11, 7]
    row = processor.encode(history, user="2")
    numbers = processor.settings["item_numbers"]
    expected_user, expected_item = {}, {}
    for pos in _spans(processor, row["input_ids"], "user_2"):
        expected_user[pos] = 2  # user "2" is the second known user -> row 2
    for item in history:
        for pos in _spans(processor, row["input_ids"], f"item_{numbers[item]}"):
            expected_item[pos] = item
    assert len(expected_user) >= 2 and all(len(_spans(processor, row["input_ids"], f"item_{numbers[i]}")) >= 2 for i in history)
    for pos, (u, i) in enumerate(zip(row["token_user_ids"], row["token_item_ids"])):
        assert u == expected_user.get(pos, -1), pos
        assert i == expected_item.get(pos, -1), pos

    # in the model: input embedding = token (+ position, added by BART) + that entity's ID row, nothing elsewhere
    batch = processor([history], users=["2"])
    encoder = model.get_encoder()
    captured = {}
    hook = encoder.encoder.register_forward_pre_hook(lambda mod, args, kwargs: captured.update(kwargs), with_kwargs=True)
    encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            token_user_ids=batch["token_user_ids"], token_item_ids=batch["token_item_ids"])
    hook.remove()
    added = captured["inputs_embeds"][0] - encoder.encoder.embed_tokens(batch["input_ids"])[0]
    users_table, items_table = model.id_embedding.user_embeddings.weight, model.id_embedding.item_embeddings.weight
    for pos in range(added.shape[0]):
        if pos in expected_user:
            want = users_table[expected_user[pos]]
        elif pos in expected_item:
            want = items_table[expected_item[pos]]
        else:
            want = torch.zeros_like(added[pos])
        assert torch.allclose(added[pos], want, atol=1e-6), pos


def test_user_and_item_tables_are_separate(genrec_factory):
    model, processor = genrec_factory()
    ids = model.id_embedding
    assert ids.user_embeddings.weight.shape[0] == len(USERS) + 1  # + the unknown-user row
    assert ids.item_embeddings.weight.shape[0] == len(processor.catalog)
    assert ids.user_embeddings.weight.data_ptr() != ids.item_embeddings.weight.data_ptr()
    assert ids.item_embeddings.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    # item ids look up the item table, never the user table (the reference code's bug)
    with torch.no_grad():
        ids.user_embeddings.weight.zero_()
    like = torch.zeros(1, 2, ids.item_embeddings.weight.shape[1])
    out = ids(torch.tensor([[-1, -1]]), torch.tensor([[3, -1]]), like)
    assert torch.allclose(out[0, 0], ids.item_embeddings.weight[3]) and out[0, 1].abs().sum() == 0


def test_unknown_users_share_their_own_row(genrec_factory):
    model, processor = genrec_factory()
    a = processor.encode([1, 2], user="nobody")
    b = processor.encode([1, 2], user=None)
    assert a == b
    user_rows = {u for u in a["token_user_ids"] if u >= 0}
    assert user_rows == {0}
    assert processor.tokenizer.decode([t for t, u in zip(a["input_ids"], a["token_user_ids"]) if u == 0]).strip() == "user_unk"


def test_item_text_ids_are_a_seeded_permutation(genrec_factory, caplog):
    _, processor = genrec_factory()
    numbers = processor.settings["item_numbers"]
    assert sorted(numbers) == list(range(len(processor.catalog)))
    assert numbers != list(range(len(processor.catalog)))
    _, again = genrec_factory()
    assert again.settings["item_numbers"] == numbers  # same seed, same texts
    with caplog.at_level(logging.WARNING, logger="genrec_hf"):
        _, original = genrec_factory(item_text_ids="original")
    assert "leaks the target" in caplog.text
    assert original.format.item_texts()[0] == f"item_{processor.catalog.original_id(0)}"


def test_pretraining_masks_never_touch_the_last_two_items():
    data = load_sequences("ml-100k")
    full = data.sequences
    texts = [f"item_{i}" for i in range(len(data.catalog))] + [f"user_{r}" for r in range(944)] + ["user_unk"]
    _, tokenizer = load_bart("tiny", texts, vocab_size=300)
    processor = SeqRecProcessor(tokenizer, data.catalog, method="genrec", users=list(data.splits["train"]["user"]), max_items=1000, max_length=None)
    collator = GenRecCollator(processor, "pretrain", seed=3)
    train, _ = genrec_datasets(data, "pretrain")
    mask_id = processor.format.mask_token_id
    item_of_label = {tuple(processor.format.item_decoder_tokens(i)): i for i in range(processor.num_items)}
    for _ in range(3):  # a new mask every epoch
        for row in train.select(range(120)):
            encoded = collator.encode_row(row)
            seq = full[row["user"]]
            assert len(row["items"]) == len(seq) - 2 and row["items"] == seq[:-2]
            assert encoded["input_ids"].count(mask_id) == 1
            masked = item_of_label[tuple(encoded["labels"])]
            assert masked in seq[:-2]
            # the validation and test targets (ml-100k has no repeats) never enter the input
            assert seq[-1] not in seq[:-2] and seq[-2] not in seq[:-2]
            assert seq[-1] not in encoded["token_item_ids"] and seq[-2] not in encoded["token_item_ids"]
            assert masked not in encoded["token_item_ids"]  # the masked item leaves no ID embedding behind


def test_finetuning_appends_the_mask_and_holds_out_the_last_item(genrec_factory):
    _, processor = genrec_factory()
    collator = GenRecCollator(processor, "finetune")
    row = collator.encode_row({"items": [4, 5, 6, 9], "user": "3"})
    assert row["input_ids"][-2:] == [processor.format.mask_token_id, processor.tokenizer.eos_token_id]
    assert row["labels"] == processor.format.item_decoder_tokens(9)
    assert 9 not in row["token_item_ids"]
    assert {i for i in row["token_item_ids"] if i >= 0} == {4, 5, 6}
    random_cut = GenRecCollator(processor, "finetune", finetune_targets="random", seed=1)
    targets = {tuple(random_cut.encode_row({"items": [4, 5, 6, 9], "user": "3"})["labels"]) for _ in range(30)}
    assert len(targets) > 1


def test_constrained_recommend_returns_catalog_items(genrec_factory):
    model, processor = genrec_factory()
    model.eval()
    inputs = processor([[1, 2, 3], [4]], users=["1", None])
    out = model.recommend(**inputs, top_k=6)
    assert out.item_ids.shape == (2, 6)
    assert bool((out.item_ids >= 0).all()) and out.num_valid.tolist() == [6, 6]
    for row in out.item_ids.tolist():
        assert len(set(row)) == 6
    assert torch.all(out.scores[:, :-1] >= out.scores[:, 1:])
    excl = model.recommend(**inputs, top_k=6, exclude_history=True)
    assert not {1, 2, 3} & set(excl.item_ids[0].tolist())
    # plain generate() is constrained too: every sequence spells an item
    seq = model.generate(**{k: v for k, v in inputs.items() if k != "history_item_ids"}, num_beams=4, num_return_sequences=4)
    assert bool((model.trie.items_of(seq[:, 1:]) >= 0).all())

    class FavourMask(LogitsProcessor):  # pushes every beam towards a token no item starts with
        def __call__(self, input_ids, scores):
            scores[:, processor.format.mask_token_id] += 50.0
            return scores

    nudged = dict(**inputs, top_k=6, logits_processor=LogitsProcessorList([FavourMask()]))
    free = model.recommend(**nudged, constrained=False)
    assert free.num_generated.tolist() == [6, 6]
    assert bool((free.num_valid < 6).all())  # off-catalog beams are counted as invalid ...
    assert bool((free.item_ids[free.item_ids >= 0] < len(processor.catalog)).all())  # ... and never returned
    assert bool((free.item_ids[:, -1] == -1).all())
    kept = model.recommend(**nudged)  # the trie wins over the nudge
    assert kept.num_valid.tolist() == [6, 6] and bool((kept.item_ids >= 0).all())


def test_trainer_runs_two_steps_of_each_stage(genrec_factory, tmp_path):
    model, processor = genrec_factory()
    rows = [{"items": [i % 24, (i + 3) % 24, (i + 5) % 24, (i + 8) % 24], "user": USERS[i % 8]} for i in range(8)]
    for stage in ("pretrain", "finetune"):
        args = TrainingArguments(output_dir=str(tmp_path / stage), max_steps=2, per_device_train_batch_size=4,
                                 report_to="none", use_cpu=True, save_strategy="no", remove_unused_columns=False)
        before = model.id_embedding.item_embeddings.weight.detach().clone()
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=GenRecCollator(processor, stage))
        trainer.train()
        assert trainer.state.global_step == 2
        assert not torch.equal(before, model.id_embedding.item_embeddings.weight)


def test_round_trip_and_remote_code(genrec_factory, tmp_path):
    model, processor = genrec_factory()
    model.eval()
    processor.save_pretrained(tmp_path / "ckpt")  # processor first (ST2SI's test saves the model first)
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForSeq2SeqLM"}
    assert (tmp_path / "ckpt" / "trie.py").is_file() and not (tmp_path / "ckpt" / "trie.py").is_symlink()
    inputs = processor([[1, 2, 3], [7, 8]], targets=[4, 9], users=["1", "5"])
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded, GenRecForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(tmp_path / "ckpt"), GenRecForConditionalGeneration)
    assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    rec = model.recommend(**processor([[1, 2, 3]]), top_k=5)
    assert torch.equal(rec.item_ids, loaded.recommend(**processor([[1, 2, 3]]), top_k=5).item_ids)
    histories, users = [[1, 2, 3], [7, 8], [5]], ["1", "5", "unknown"]
    rec_inputs = processor(histories, users=users)
    rec = model.recommend(**rec_inputs, top_k=5)
    torch.save({"inputs": dict(inputs), "logits": model(**inputs).logits, "rec": rec.item_ids, "rec_inputs": dict(rec_inputs),
                "table": processor.item_token_table()}, tmp_path / "expected.pt")
    (tmp_path / "titles.json").write_text(json.dumps(processor.decode_items(rec.item_ids)))
    processor_config = json.loads((tmp_path / "ckpt" / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_genrec.GenRecProcessor"}
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["genrec_hf"] = None
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoProcessor
        ckpt = {str(tmp_path / 'ckpt')!r}
        model = AutoModelForSeq2SeqLM.from_pretrained(ckpt, trust_remote_code=True).eval()
        assert "genrec_hf" not in type(model).__module__
        processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
        assert type(processor).__name__ == "GenRecProcessor" and "genrec_hf" not in type(processor).__module__, type(processor)
        e = torch.load({str(tmp_path / 'expected.pt')!r})
        inputs = processor([[1, 2, 3], [7, 8]], targets=[4, 9], users=["1", "5"])
        for name, expected in (("inputs", inputs), ("rec_inputs", processor({histories!r}, users={users!r}))):
            assert set(expected) == set(e[name]) and all(torch.equal(expected[k], e[name][k]) for k in e[name]), name
        assert torch.equal(processor.item_token_table(), e["table"])
        assert torch.equal(model(**inputs).logits, e["logits"])
        out = model.recommend(**processor({histories!r}, users={users!r}), top_k=5)
        assert torch.equal(out.item_ids, e["rec"]), (out.item_ids, e["rec"])
        assert processor.decode_items(out.item_ids) == json.load(open({str(tmp_path / 'titles.json')!r}))
        print("remote code ok")
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code ok" in result.stdout


def test_pipeline_evaluates_generative_models(genrec_factory):
    from genrec_hf.evaluation import evaluate_recommender

    model, processor = genrec_factory()
    pipeline = SeqRecPipeline(model, processor)
    assert not pipeline.full_ranking
    split = {"user": ["1", "2", "9"], "history": [[1, 2], [3], [5, 6, 7]], "target": [3, 4, 8]}
    result = evaluate_recommender(pipeline, split, ks=(1, 5), progress=False, top_k=6)
    assert result.valid_ratio == 1.0 and result.num_users == 3
    with pytest.raises(TypeError, match="ranks by generation"):
        pipeline.score_items([[1]])


def test_bad_inputs(genrec_factory, catalog):
    model, processor = genrec_factory()
    with pytest.raises(ValueError, match="empty history in row 0"):
        processor([[]])
    with pytest.raises(ValueError, match="unknown item id 99"):
        processor([[1, 99]])
    with pytest.raises(ValueError, match="mask_position 5 is outside"):
        processor.encode([1, 2], mask_position=5)
    with pytest.raises(ValueError, match="catalog size mismatch"):
        model.set_item_tokens(processor.item_token_table()[:-1])
    with pytest.raises(ValueError, match="2 users for 1 histories"):
        processor([[1]], users=["1", "2"])
    with pytest.raises(ValueError, match="exclude_history=True needs history_item_ids"):
        inputs = processor([[1]])
        model.recommend(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], exclude_history=True)
    with pytest.raises(ValueError, match="text_config must be a BART config"):
        from genrec_hf.backbones import tiny_config

        GenRecConfig(text_config=tiny_config("llama", 100))
    other = SeqRecProcessor(processor.tokenizer, catalog, method="genrec", users=USERS, seed=7)
    with pytest.raises(ValueError, match="item text mismatch"):
        SeqRecPipeline(model, other)
    empty = GenRecForConditionalGeneration(model.config)
    with pytest.raises(ValueError, match="item token table is empty"):
        empty.trie


def test_unknown_user_row_is_trained_through_user_dropout(genrec_factory, tmp_path):
    model, processor = genrec_factory()
    row = {"items": [4, 5, 6, 9], "user": "3"}
    always = GenRecCollator(processor, "finetune", unknown_user_prob=1.0)
    assert {u for u in always.encode_row(row)["token_user_ids"] if u >= 0} == {0}
    never = GenRecCollator(processor, "finetune", unknown_user_prob=0.0)
    assert {u for u in never.encode_row(row)["token_user_ids"] if u >= 0} == {3}
    default = GenRecCollator(processor, "pretrain", seed=5)
    shown_unknown = sum(0 in default.encode_row(row)["token_user_ids"] for _ in range(400))
    assert 15 < shown_unknown < 70  # about 10% of rows
    # evaluation rows keep their user
    assert 0 not in always.encode_row({"history": [4, 5], "target": 6, "user": "3"})["token_user_ids"]
    with pytest.raises(ValueError, match="unknown_user_prob"):
        GenRecCollator(processor, "finetune", unknown_user_prob=1.5)

    rows = [{"items": [i % 24, (i + 3) % 24, (i + 5) % 24], "user": USERS[i % 8]} for i in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, save_strategy="no", remove_unused_columns=False)
    unknown_row = model.id_embedding.user_embeddings.weight[0].detach().clone()
    Trainer(model=model, args=args, train_dataset=rows, data_collator=always).train()
    assert not torch.equal(unknown_row, model.id_embedding.user_embeddings.weight[0])


def test_constrained_generate_matches_the_prefix_allowed_tokens_oracle(genrec_factory):
    from genrec_hf.generation import prefix_allowed_tokens_oracle

    model, processor = genrec_factory()
    model.eval()
    inputs = {k: v for k, v in processor([[1, 2, 3], [4], [9, 10, 11, 12]], users=["1", None, "4"]).items()
              if k != "history_item_ids"}
    common = dict(**inputs, num_beams=8, num_return_sequences=8, output_scores=True, return_dict_in_generate=True)
    fast = model.generate(**common)  # the vectorised trie, on by default
    oracle = prefix_allowed_tokens_oracle(model.item_token_ids, 1, processor.tokenizer.eos_token_id)
    slow = model.generate(**common, constrained=False, prefix_allowed_tokens_fn=oracle)
    width = max(fast.sequences.shape[1], slow.sequences.shape[1])
    pad = processor.tokenizer.pad_token_id
    fast_seq = torch.nn.functional.pad(fast.sequences, (0, width - fast.sequences.shape[1]), value=pad)
    slow_seq = torch.nn.functional.pad(slow.sequences, (0, width - slow.sequences.shape[1]), value=pad)
    assert torch.equal(fast_seq, slow_seq)
    assert torch.allclose(fast.sequences_scores, slow.sequences_scores)


def test_beams_past_a_small_catalog_are_not_counted_as_items(genrec_factory, catalog):
    model, processor = genrec_factory()
    model.eval()
    out = model.recommend(**processor([[1, 2], [5]]), top_k=len(catalog) + 6)  # more beams than items
    for row, valid, generated in zip(out.item_ids.tolist(), out.num_valid.tolist(), out.num_generated.tolist()):
        distinct = {i for i in row if i >= 0}
        assert valid == generated == len(distinct) <= len(catalog)
        assert row.count(-1) >= 6


def test_genrec_inputs_without_entity_ids_are_refused(genrec_factory):
    model, processor = genrec_factory()
    inputs = processor([[1, 2]], targets=[3], users=["1"])
    with pytest.raises(ValueError, match="needs token_user_ids and token_item_ids"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"])
    with pytest.raises(ValueError, match="needs token_user_ids and token_item_ids"):  # half of them is not enough
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"],
              token_item_ids=inputs["token_item_ids"])
    with pytest.raises(ValueError, match="users must be a list"):
        processor([[1, 2], [3]], users="12")


def test_loading_a_genrec_model_with_other_users_is_refused(genrec_factory, tmp_path, catalog):
    model, processor = genrec_factory()
    model.save_pretrained(tmp_path)
    SeqRecProcessor(processor.tokenizer, catalog, method="genrec", users=USERS + ["99"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"catalog size mismatch: .* has num_users={len(USERS)} but the processor's user list has {len(USERS) + 1}"):
        SeqRecPipeline.from_pretrained(tmp_path)


def test_recommend_deduplicates_beams_that_map_to_one_item(genrec_factory):
    model, processor = genrec_factory()
    model.eval()

    class OffCatalog(LogitsProcessor):  # every beam leaves the trie ...
        def __call__(self, input_ids, scores):
            scores[:, processor.format.mask_token_id] += 50.0
            return scores

    def everything_is_item_3(sequences):  # ... and a text mapping reads each one as item 3
        return torch.full((sequences.shape[0],), 3, dtype=torch.long)

    out = model.recommend(**processor([[1, 2], [5]]), top_k=6, constrained=False,
                          logits_processor=LogitsProcessorList([OffCatalog()]), sequence_to_item=everything_is_item_3)
    assert out.num_valid.tolist() == [6, 6]  # every beam names a catalog item ...
    assert out.item_ids.tolist() == [[3, -1, -1, -1, -1, -1]] * 2  # ... the same one, listed once
    assert torch.isfinite(out.scores[:, 0]).all() and torch.isinf(out.scores[:, 1:]).all()


def test_id_embedding_scale_multiplies_the_added_id_vector(genrec_factory, tmp_path):
    model, processor = genrec_factory()
    inputs = processor([[1, 2, 3]], users=["1"])
    encoder = model.get_encoder()
    tokens = encoder.encoder.embed_tokens(inputs["input_ids"])
    added = model.id_embedding(inputs["token_user_ids"], inputs["token_item_ids"], tokens)
    assert float(added.detach().abs().sum()) > 0
    model.config.id_embedding_scale = 0.25
    scaled = GenRecForConditionalGeneration(model.config)
    scaled.load_state_dict(model.state_dict())
    assert torch.allclose(scaled.id_embedding(inputs["token_user_ids"], inputs["token_item_ids"], tokens), 0.25 * added)
    scaled.save_pretrained(tmp_path)
    assert GenRecForConditionalGeneration.from_pretrained(tmp_path).id_embedding.scale == 0.25
