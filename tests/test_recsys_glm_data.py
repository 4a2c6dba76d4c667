"""RecSysGLM's data side: text, entity-aware blank infilling, 2D positions, padding, collators
(paper "Data Phase" and "Training Phase"; the tensor contract in processing_recsys_glm.py)."""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec_hf.data import ItemCatalog
from genrec_hf.models.recsys_glm.processing_recsys_glm import (
    OBJECTIVES,
    SPECIAL_TOKEN_KEYS,
    RecSysGLMProcessor,
    build_infilling_row,
    entity_units,
    sample_document_span,
    sample_entity_spans,
    sample_sentence_spans,
    sentence_ranges,
)
from genrec_hf.training.recsys_glm import BATCH_KEYS, RecSysGLMNextItemCollator, RecSysGLMPretrainCollator, recsys_glm_datasets

M, SM, GM, S, E = 1, 2, 3, 4, 5  # hand-built special ids for tokenizer-free rows
CONTRACT_KEYS = {"input_ids", "attention_mask", "position_ids", "part_a_length", "labels", "entity_ids"}


@pytest.fixture(scope="module")
def processor(catalog, tokenizer_factory):
    return RecSysGLMProcessor(tokenizer_factory(), catalog)


def check_row(row, text_ids, text_entities, start_id, end_id, mask_ids, dynamic=True):
    """Every contract rule on one unpadded row; returns the masked spans as (start, end) in the text."""
    a = row["part_a_length"]
    ids, (inter, intra), labels, ents = row["input_ids"], row["position_ids"], row["labels"], row["entity_ids"]
    assert len(ids) == len(inter) == len(intra) == len(labels) == len(ents)
    part_a, part_b = ids[:a], ids[a:]
    assert inter[:a] == list(range(a)) and labels[:a] == [-100] * a
    masks = [i for i, t in enumerate(part_a) if t in mask_ids]
    starts = [i for i, t in enumerate(part_b) if t == start_id]
    assert len(masks) == len(starts) >= 1 and starts[0] == 0
    bounds = starts + [len(part_b)]
    # rebuild the text: each mask takes its span's tokens, spans in chronological order
    rebuilt, rebuilt_ents, spans, cursor = [], [], [], 0
    for k, mask in enumerate(masks):
        rebuilt += part_a[cursor:mask]
        rebuilt_ents += ents[cursor:mask]
        b0, b1 = a + bounds[k], a + bounds[k + 1]
        content = ids[b0 + 1:b1]
        assert inter[b0:b1] == [mask] * (b1 - b0)  # a span's tokens take their mask's inter-position
        assert labels[b0:b1] == content + [end_id]  # aligned labels, [END] after the span
        assert ents[b0] == -1 and intra[b0] == 1  # [START]
        expected, prev = [1], None
        for j, e in enumerate(ents[b0 + 1:b1]):
            if not dynamic or j == 0 or (e >= 0 and e == prev):
                expected.append(expected[-1] + 1)
            else:
                expected.append(1)
            prev = e
        assert intra[b0:b1] == expected
        spans.append((len(rebuilt), len(rebuilt) + len(content)))
        rebuilt += content
        rebuilt_ents += ents[b0 + 1:b1]
        cursor = mask + 1
    rebuilt += part_a[cursor:]
    rebuilt_ents += ents[cursor:a]
    assert rebuilt == list(text_ids) and rebuilt_ents == list(text_entities)
    # Part A intra: 0 outside entities and for masks, 1..n within an entity (0 everywhere when not dynamic)
    expected_a, prev = [], None
    for e in ents[:a]:
        expected_a.append(0 if (e < 0 or not dynamic) else (expected_a[-1] + 1 if e == prev else 1))
        prev = e
    assert intra[:a] == expected_a
    # no span splits an entity: an entity is wholly in Part A or wholly in one span
    n = len(text_ids)
    for s, e in spans:
        for b in (s, e):
            assert not (0 < b < n and text_entities[b - 1] >= 0 and text_entities[b - 1] == text_entities[b]), (s, e)
    return spans


# -- 2D positions: the paper's Figure 1 ---------------------------------------------------------
def test_figure_1_positions_from_the_entity_layout():
    # x1 x2 x3 = e1, x4, x5, x6 x7 = e2; mask e1 and x5
    x = [11, 12, 13, 14, 15, 16, 17]
    entities = [0, 0, 0, -1, -1, 1, 1]
    row = build_infilling_row(x, entities, [(0, 3, M), (4, 5, M)], S, E)
    assert row["part_a_length"] == 5
    assert row["input_ids"] == [M, 14, M, 16, 17, S, 11, 12, 13, S, 15]
    assert row["position_ids"][0] == [0, 1, 2, 3, 4, 0, 0, 0, 0, 2, 2]
    assert row["position_ids"][1] == [0, 0, 0, 1, 2, 1, 2, 3, 4, 1, 2]
    assert row["labels"] == [-100] * 5 + [11, 12, 13, E, 15, E]
    assert row["entity_ids"] == [-1, -1, -1, 1, 1, -1, 0, 0, 0, -1, -1]
    check_row(row, x, entities, S, E, {M})


def test_a_span_restarts_its_intra_position_at_each_new_entity():
    # [S] x4 x6 x7 with x4 lone and e2 = x6 x7: 1 2 1 2 (contract); plain GLM positions: 1 2 3 4
    row = build_infilling_row([14, 16, 17], [-1, 1, 1], [(0, 3, GM)], S, E)
    assert row["input_ids"] == [GM, S, 14, 16, 17] and row["position_ids"][1] == [0, 1, 2, 1, 2]
    plain = build_infilling_row([14, 16, 17], [-1, 1, 1], [(0, 3, GM)], S, E, dynamic_positions=False)
    assert plain["position_ids"][1] == [0, 1, 2, 3, 4]
    # two lone tokens in a row: the second restarts (it is not in the first one's entity)
    assert build_infilling_row([14, 15], [-1, -1], [(0, 2, M)], S, E)["position_ids"][1] == [0, 1, 2, 1]


def test_figure_1_through_the_processor_on_real_text(tokenizer_factory):
    # items "red blue green" (3 tokens) and "night day" (2 tokens), a separator of two lone tokens
    cat = ItemCatalog(["a", "b"], [{"title": "red blue green"}, {"title": "night day"}])
    p = RecSysGLMProcessor(tokenizer_factory(), cat, instruction="", separator="!?")
    text = p.textualise([0, 1])
    bos = p.tokenizer.bos_token_id
    assert text.input_ids[0] == bos and text.fixed == 1
    assert text.entity_ids == [-1, 0, 0, 0, -1, -1, 1, 1], p.tokenizer.convert_ids_to_tokens(text.input_ids)
    assert text.entity_items == [0, 1]
    x = text.input_ids
    ids = p.special_token_ids()
    m, s, e = ids["mask_token_id"], ids["start_token_id"], ids["end_token_id"]
    row = build_infilling_row(x, text.entity_ids, [(1, 4, m), (5, 6, m)], s, e)
    assert row["input_ids"] == [bos, m, x[4], m, x[6], x[7], s, x[1], x[2], x[3], s, x[5]]
    assert row["position_ids"][0] == [0, 1, 2, 3, 4, 5, 1, 1, 1, 1, 3, 3]
    assert row["position_ids"][1] == [0, 0, 0, 0, 1, 2, 1, 2, 3, 4, 1, 2]
    batch = p.pad({k: [row[k]] for k in ("input_ids", "position_ids", "labels", "entity_ids", "part_a_length")})
    assert batch["position_ids"].shape == (1, 2, 12) and batch["position_ids"][0, 1].tolist() == row["position_ids"][1]
    # the next-item row of the same text masks e2, the newest item, with the same rule
    ft = p.encode([0], target=1)
    assert ft["input_ids"] == [bos, x[1], x[2], x[3], x[4], x[5], m, s, x[6], x[7]]
    assert ft["position_ids"] == [[0, 1, 2, 3, 4, 5, 6, 6, 6, 6], [0, 1, 2, 3, 0, 0, 0, 1, 2, 3]]


# -- entities never split, spans chronological (property test over random layouts) ------------
@st.composite
def layouts(draw):
    """A text of units (lone tokens and entities of 1-5 tokens) after one never-masked bos, with
    sentence boundaries between units."""
    units = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 5), st.booleans()), min_size=1, max_size=40))
    ids, ents, sents, entity, sentence = [99], [-1], [-1], 0, 0
    for is_entity, length, new_sentence in units:
        sentence += int(new_sentence and len(ids) > 1)
        length = length if is_entity else 1
        ids += [100 + len(ids) + k for k in range(length)]
        ents += [entity if is_entity else -1] * length
        sents += [sentence] * length
        entity += int(is_entity)
    return ids, ents, sents


@settings(max_examples=150, deadline=None, derandomize=True)
@given(layouts(), st.integers(0, 2**32 - 1))
def test_no_objective_splits_an_entity_and_spans_stay_chronological(layout, seed):
    ids, ents, sents = layout
    rng = np.random.default_rng(seed)
    units = entity_units(ents, start=1)
    assert sum(e - s for s, e in units) == len(ids) - 1 and all(u[1] == v[0] for u, v in zip(units, units[1:]))
    boundaries = {s for s, _ in units} | {units[-1][1]}
    maskable = len(ids) - 1

    spans = sample_entity_spans(units, rng, 0.15, 3.0)
    masked_units = sum(1 for s, e in units if any(a <= s and e <= b for a, b in spans))
    assert masked_units >= max(1, round(0.15 * len(units)))
    assert all(b < c for (_, b), (c, _) in zip(spans, spans[1:]))  # chronological, an unmasked unit between
    sentences = sentence_ranges(units, sents)
    smask = sample_sentence_spans(sentences, rng, 0.15)
    assert all(span in sentences for span in smask) and smask == sorted(smask)
    assert sum(e - s for s, e in smask) >= min(0.15 * maskable, maskable) - 1e-9
    gmask = sample_document_span(units, rng, 0.5, 1.0)
    assert len(gmask) == 1 and gmask[0][1] == len(ids) and 0.5 <= (gmask[0][1] - gmask[0][0]) / maskable <= 1.0

    for chosen, mask in ((spans, M), (smask, SM), (gmask, GM)):
        assert all(s in boundaries and e in boundaries for s, e in chosen)
        row = build_infilling_row(ids, ents, [(s, e, mask) for s, e in chosen], S, E)
        assert check_row(row, ids, ents, S, E, {M, SM, GM}) == list(chosen)


def test_a_span_that_would_split_an_entity_is_refused():
    with pytest.raises(ValueError, match="splits entity 0"):
        build_infilling_row([11, 12, 13, 14], [0, 0, 0, -1], [(1, 4, M)], S, E)
    with pytest.raises(ValueError, match="chronological"):
        build_infilling_row([11, 12, 13], [-1, -1, -1], [(2, 3, M), (0, 1, M)], S, E)


def test_processor_rows_of_every_objective_keep_entities_whole(processor):
    rng = np.random.default_rng(0)
    mask_ids = {processor.special_token_ids()[k] for k in SPECIAL_TOKEN_KEYS[:3]}
    ids = processor.special_token_ids()
    seen = Counter()
    for trial in range(120):
        history = rng.integers(0, processor.num_items, size=int(rng.integers(1, 30))).tolist()
        user = {"age": int(rng.integers(18, 70)), "genres": ["red", "blue"]} if trial % 4 == 0 else "u1"
        objective = OBJECTIVES[trial % 3]
        row = processor.encode_infilling(history, objective, rng, user=user)
        text = processor.textualise(history, user)
        spans = check_row(row, text.input_ids, text.entity_ids, ids["start_token_id"], ids["end_token_id"], mask_ids)
        used = {t for t in row["input_ids"][:row["part_a_length"]] if t in mask_ids}
        assert used == {ids[f"{objective}_token_id"]}
        maskable = len(text.input_ids) - text.fixed
        if objective == "gmask":
            assert len(spans) == 1 and spans[0][1] == len(text.input_ids)
            assert 0.5 <= (spans[0][1] - spans[0][0]) / maskable <= 1.0
        if objective == "smask":
            sentences = sentence_ranges(entity_units(text.entity_ids, text.fixed), text.sentence_ids)
            assert all(span in sentences for span in spans)
        seen[objective] += len(spans)
        # pretraining rows: a behaviour window, then a drawn objective
        row = processor.encode_pretraining(history, rng)
        text = processor.textualise(row["history_item_ids"])
        check_row(row, text.input_ids, text.entity_ids, ids["start_token_id"], ids["end_token_id"], mask_ids)
        assert row["objective"] in OBJECTIVES and row["behaviour"] in ("long", "medium", "short")
    assert all(seen[o] for o in OBJECTIVES)


def test_sentences_are_the_instruction_and_groups_of_items_from_the_newest(processor):
    text = processor.textualise(list(range(12)))
    units = entity_units(text.entity_ids, text.fixed)
    sentences = sentence_ranges(units, text.sentence_ids)
    items_per_sentence = [sum(1 for s, e in units if a <= s and e <= b and text.entity_ids[s] >= 0) for a, b in sentences]
    assert items_per_sentence == [0, 2, 5, 5]  # the instruction, then 12 items as 2 + 5 + 5
    # a separator belongs to the item before it: every behaviour sentence but the last ends with one
    sep = processor.format.separator_ids
    for a, b in sentences[1:-1]:
        assert text.input_ids[b - len(sep):b] == sep


# -- padding and the inference / fine-tuning rows ------------------------------------------------
def test_part_a_is_left_padded_and_part_b_right_padded(processor):
    rng = np.random.default_rng(3)
    rows = [processor.encode_infilling(h, o, rng) for h, o in (([1, 2], "mask"), (list(range(15)), "gmask"), ([5, 6, 7], "smask"))]
    batch = processor.pad({k: [r[k] for r in rows] for k in BATCH_KEYS})
    width_a = max(r["part_a_length"] for r in rows)
    assert batch["part_a_length"].tolist() == [width_a] * 3
    start = processor.special_token_ids()["start_token_id"]
    assert batch["input_ids"][:, width_a].tolist() == [start] * 3
    for i, r in enumerate(rows):
        a, b = r["part_a_length"], len(r["input_ids"]) - r["part_a_length"]
        pad_a, pad_b = width_a - a, batch["input_ids"].shape[1] - width_a - b
        assert batch["attention_mask"][i].tolist() == [0] * pad_a + [1] * (a + b) + [0] * pad_b
        assert batch["input_ids"][i, pad_a:pad_a + a + b].tolist() == r["input_ids"]
        assert batch["input_ids"][i, :pad_a].eq(processor.tokenizer.pad_token_id).all()
        assert batch["position_ids"][i, 0, pad_a:width_a].tolist() == list(range(a))  # padding does not shift
        assert batch["position_ids"][i, :, :pad_a].eq(0).all() and batch["position_ids"][i, :, width_a + b:].eq(0).all()
        assert batch["labels"][i, :width_a].eq(-100).all() and batch["labels"][i, width_a + b:].eq(-100).all()
        assert batch["entity_ids"][i, :pad_a].eq(-1).all()
    assert all(batch[k].dtype == torch.long for k in batch)


def test_the_inference_row_is_the_fine_tuning_row_without_its_target(processor):
    histories, targets = [[1, 2, 3], list(range(24)) + [1, 2], [7]], [9, 0, 23]
    inference, finetune = processor(histories), processor(histories, targets=targets)
    assert set(inference) == {"input_ids", "attention_mask", "position_ids", "part_a_length", "history_item_ids"}
    assert set(finetune) == set(inference) | {"labels"}
    a = int(inference["part_a_length"][0])
    assert torch.equal(finetune["part_a_length"], inference["part_a_length"])
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(inference[key][:, :a + 1], finetune[key][:, :a + 1])
    assert torch.equal(inference["position_ids"][:, :, :a + 1], finetune["position_ids"][:, :, :a + 1])
    assert inference["input_ids"].shape[1] == a + 1  # Part B = [START] alone
    ids = processor.special_token_ids()
    assert inference["input_ids"][:, a - 1].eq(ids["mask_token_id"]).all()
    assert inference["position_ids"][:, 0, a].tolist() == inference["position_ids"][:, 0, a - 1].tolist()
    assert inference["position_ids"][:, 1, a].tolist() == [1, 1, 1]
    assert inference["history_item_ids"][0].tolist() == [1, 2, 3] + [-1] * 23
    table = processor.item_token_table()
    for i, t in enumerate(targets):
        tokens = [x for x in table[t].tolist() if x >= 0]
        n = len(tokens)
        assert finetune["input_ids"][i, a + 1:a + 1 + n].tolist() == tokens
        assert finetune["labels"][i, a:a + n + 1].tolist() == tokens + [ids["end_token_id"]]
        assert finetune["position_ids"][i, 1, a:a + n + 1].tolist() == list(range(1, n + 2))
    # the fine-tuning row is an entity-level [MASK] row over the history + target text
    row = processor.encode([1, 2, 3], 9)
    text = processor.textualise([1, 2, 3, 9])
    assert check_row(row, text.input_ids, text.entity_ids, ids["start_token_id"], ids["end_token_id"], {ids["mask_token_id"]}) == [
        (len(text.input_ids) - len(table[9][table[9] >= 0]), len(text.input_ids))]
    # inference sees the newest max_items items; history_item_ids keeps the whole history
    long = list(range(24)) * 2
    assert processor.textualise(long).entity_items == long[-20:]


def test_item_token_table_holds_item_tokens_as_written_inside_a_text(processor):
    table = processor.item_token_table()
    assert table.shape[0] == processor.num_items and table.dtype == torch.long
    text = processor.textualise([4, 5])
    for entity, item in enumerate(text.entity_items):
        tokens = [t for t, e in zip(text.input_ids, text.entity_ids) if e == entity]
        assert tokens == [x for x in table[item].tolist() if x >= 0]
    assert processor.tokenizer.decode(table[4][table[4] >= 0]) == " " + processor.catalog.text(4)


def test_dynamic_positions_off_gives_plain_glm_positions(catalog, tokenizer_factory):
    plain = RecSysGLMProcessor(tokenizer_factory(), catalog, dynamic_positions=False)
    row = plain.encode_infilling(list(range(10)), "gmask", np.random.default_rng(1))
    a = row["part_a_length"]
    assert row["position_ids"][1][:a] == [0] * a
    assert row["position_ids"][1][a:] == list(range(1, len(row["input_ids"]) - a + 1))
    ids = plain.special_token_ids()
    text = plain.textualise(list(range(10)))
    check_row(row, text.input_ids, text.entity_ids, ids["start_token_id"], ids["end_token_id"], {ids["gmask_token_id"]}, dynamic=False)


# -- behaviour windows and the objective mix ---------------------------------------------------
def test_behaviour_windows_follow_their_probabilities_and_definitions(processor):
    rng = np.random.default_rng(0)
    items = list(range(100))
    kinds = Counter()
    for _ in range(4000):
        kind, window = processor.sample_behaviour(items, rng)
        kinds[kind] += 1
        assert len(window) == 20 and window == sorted(window)
        if kind == "short":
            assert window == items[-20:]
        elif kind == "medium":
            assert window[0] >= 50  # drawn from the newest half
    for kind, p in (("long", 0.1), ("medium", 0.3), ("short", 0.6)):
        assert abs(kinds[kind] / 4000 - p) < 0.03, kinds
    assert processor.sample_behaviour(list(range(7)), rng)[1] == list(range(7))  # short sequences are whole
    objectives = Counter(processor.format.draw_objective(rng) for _ in range(3000))
    for objective, p in processor.settings["objective_ratios"].items():
        assert abs(objectives[objective] / 3000 - p) < 0.03, objectives


# -- collators -------------------------------------------------------------------------------
def test_collators_produce_contract_batches(processor):
    rows = [{"user": "1", "items": [i % 24 for i in range(30)]}, {"user": "2", "items": [3]}, {"user": "3", "history": [1, 2], "target": 5}]
    batch = RecSysGLMPretrainCollator(processor, seed=0)(rows)
    assert set(batch) == CONTRACT_KEYS and all(v.dtype == torch.long for v in batch.values())
    b, width = batch["input_ids"].shape
    assert batch["position_ids"].shape == (b, 2, width) and batch["part_a_length"].shape == (b,)
    assert (batch["labels"] != -100).any(dim=1).all()
    again = RecSysGLMPretrainCollator(processor, seed=0)(rows)
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # seeded
    # one objective per batch (GLM's choice) by default, per row on request
    masks = torch.tensor([processor.special_token_ids()[k] for k in SPECIAL_TOKEN_KEYS[:3]])
    train_rows = rows[:2] * 4

    def kinds(out):
        return {int(t) for t in out["input_ids"][torch.isin(out["input_ids"], masks)]}

    per_batch = RecSysGLMPretrainCollator(processor, seed=1)
    seen = [kinds(per_batch(train_rows)) for _ in range(20)]
    assert all(len(k) == 1 for k in seen) and set().union(*seen) == set(masks.tolist())
    per_row = RecSysGLMPretrainCollator(processor, seed=1, objective_per="row")
    assert any(len(kinds(per_row(train_rows))) > 1 for _ in range(10))
    with pytest.raises(ValueError, match="objective_per"):
        RecSysGLMPretrainCollator(processor, objective_per="epoch")
    eval_row = processor.pad({k: [processor.encode([1, 2], 5)[k]] for k in BATCH_KEYS})
    assert batch["labels"][2][batch["labels"][2] != -100].tolist() == eval_row["labels"][0][eval_row["labels"][0] != -100].tolist()

    train = [{"user": "1", "items": [1, 2, 3, 4]}, {"user": "2", "items": [5, 6]}]
    last = RecSysGLMNextItemCollator(processor, targets="last")(train)
    assert set(last) == CONTRACT_KEYS
    end = processor.special_token_ids()["end_token_id"]
    for i, target in enumerate((4, 6)):
        tokens = [x for x in processor.item_token_table()[target].tolist() if x >= 0]
        assert last["labels"][i][last["labels"][i] != -100].tolist() == tokens + [end]
    rand = RecSysGLMNextItemCollator(processor, targets="random", seed=1)
    for _ in range(5):
        out = rand(train)
        assert (out["labels"] != -100).any(dim=1).all()
    with pytest.raises(ValueError, match="at least two items"):
        RecSysGLMNextItemCollator(processor)([{"user": "9", "items": [1]}])
    with pytest.raises(ValueError, match="targets must be one of"):
        RecSysGLMNextItemCollator(processor, targets="first")


def test_dataset_helper_drops_users_too_short_for_the_stage():
    from datasets import Dataset

    class Data:
        def train_valid(self, limit_users=None):
            train = Dataset.from_dict({"user": ["1", "2"], "items": [[1], [1, 2]]})
            return train, Dataset.from_dict({"user": ["1"], "history": [[1]], "target": [2]})

    assert len(recsys_glm_datasets(Data(), "pretrain")[0]) == 2
    assert len(recsys_glm_datasets(Data(), "finetune")[0]) == 1
    with pytest.raises(ValueError, match="stage"):
        recsys_glm_datasets(Data(), "warmup")


# -- special tokens, persistence, errors -------------------------------------------------------
def test_special_tokens_are_added_once_in_order_and_skipped_by_decode(catalog, tokenizer_factory):
    tokenizer = tokenizer_factory()
    size = len(tokenizer)
    p = RecSysGLMProcessor(tokenizer, catalog)
    ids = p.special_token_ids()
    assert list(ids) == list(SPECIAL_TOKEN_KEYS) and list(ids.values()) == list(range(size, size + 5))
    assert RecSysGLMProcessor(tokenizer, catalog).special_token_ids() == ids and len(tokenizer) == size + 5
    row = p.encode([1, 2], 3)
    assert "[" not in tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    # an item text cannot forge a special token
    cat = ItemCatalog(["1", "2"], [{"title": "the [MASK] movie"}, {"title": "plain"}])
    forged = RecSysGLMProcessor(tokenizer_factory(), cat)
    assert forged.special_token_ids()["mask_token_id"] not in forged.item_token_table()[0].tolist()


def test_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["method"] == "recsys_glm" and config["auto_map"] == {"AutoProcessor": "processing_recsys_glm.RecSysGLMProcessor"}
    for name in ("processing_recsys_glm.py", "processing_base.py", "catalog.py"):
        assert (tmp_path / name).is_file()
    loaded = RecSysGLMProcessor.from_pretrained(tmp_path)
    assert loaded.settings == processor.settings and loaded.special_token_ids() == processor.special_token_ids()
    histories = [[1, 2, 3], [7, 8]]
    for a, b in ((processor(histories), loaded(histories)), (processor(histories, targets=[4, 9]), loaded(histories, targets=[4, 9]))):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert processor.encode_pretraining([i % 24 for i in range(40)], 5) == loaded.encode_pretraining([i % 24 for i in range(40)], 5)
    assert torch.equal(processor.item_token_table(), loaded.item_token_table())
    assert RecSysGLMProcessor.from_pretrained(tmp_path, dynamic_positions=False).settings["dynamic_positions"] is False

    # Hub remote code: the saved folder loads where genrec_hf cannot be imported
    expected = {k: v.tolist() for k, v in processor(histories, targets=[4, 9]).items()}
    script = textwrap.dedent(f"""
        import sys
        sys.modules["genrec_hf"] = None
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        cls = get_class_from_dynamic_module("processing_recsys_glm.RecSysGLMProcessor", {str(tmp_path)!r})
        assert "genrec_hf" not in cls.__module__
        p = cls.from_pretrained({str(tmp_path)!r})
        out = {{k: v.tolist() for k, v in p({histories!r}, targets=[4, 9]).items()}}
        assert out == {expected!r}
        print("remote code ok")
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "remote code ok" in result.stdout, result.stderr[-3000:]


def test_bad_input_gives_clear_errors(processor, catalog, tokenizer_factory):
    with pytest.raises(ValueError, match="empty history"):
        processor([[1, 2], []])
    with pytest.raises(ValueError, match="unknown item id 99"):
        processor([[1, 99]])
    with pytest.raises(ValueError, match="unknown item id -3"):
        processor.encode_infilling([1, -3])
    with pytest.raises(ValueError, match="empty history"):
        processor.encode_pretraining([])
    with pytest.raises(ValueError, match="unknown item id 50"):
        processor([[1]], targets=[50])
    with pytest.raises(ValueError, match="unknown objective"):
        processor.encode_infilling([1, 2], "span")
    with pytest.raises(ValueError, match="mask_position"):
        processor.encode([1, 2], mask_position=0)
    tok = tokenizer_factory()
    bad = [
        ({"objective_ratios": {"mask": 0.6, "smask": 0.2}}, "sum to 1"),
        ({"objective_ratios": {"mask": 1.2, "gmask": -0.2}}, "objective_ratios must be probabilities"),
        ({"objective_ratios": {"entity": 1.0}}, "unknown key"),
        ({"window_probs": {"long": 0.5, "medium": 0.5, "short": 0.5}}, "window_probs must be"),
        ({"gmask_range": [0.7, 0.5]}, "gmask_range"),
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"start_token": "[MASK]"}, "must differ"),
        ({"max_items": 0}, ">= 1"),
        ({"span_ratio": 0.1}, "unknown recsys_glm processor setting"),
    ]
    for setting, message in bad:
        with pytest.raises(ValueError, match=message):
            RecSysGLMProcessor(tok, catalog, **setting)
    with pytest.raises(ValueError, match="cannot hold even the newest item"):
        RecSysGLMProcessor(tok, catalog, max_length=8)([[1, 2]])


def test_user_ids_are_written_with_their_table_features(catalog, tokenizer_factory, tmp_path):
    """The paper's textualised user features: a user id found in `user_table` is written as
    'key: value; ...' (values as entities) in training rows and inference rows alike."""
    table = {"7": {"age": "24", "occupation": "writer"}, "8": {"age": "53"}}
    p = RecSysGLMProcessor(tokenizer_factory(), catalog, user_table=table)
    plain = RecSysGLMProcessor(tokenizer_factory(), catalog)
    with_id = p.encode([1, 2], 3, user="7")
    assert with_id == p.encode([1, 2], 3, user=table["7"])  # an id reads as its features
    assert plain.encode([1, 2], 3, user="7") == p.encode([1, 2], 3, user="unknown")  # no table entry: behaviour only
    text = p.tokenizer.decode(with_id["input_ids"])
    assert "age: 24; occupation: writer." in text.replace(" ;", ";")
    features = p.format.textualise([], "7")
    assert len({e for e in features.entity_ids if e >= 0}) == 2  # each value an entity
    # the collators pass the row's user id, evaluation passes user ids: the same rows
    collator = RecSysGLMNextItemCollator(p, targets="last")
    row = collator.encode_row({"user": "8", "items": [1, 2, 3]})
    assert row == p.encode([1, 2], 3, user="8")
    batch = p([[1, 2]], users=["8"])
    assert torch.equal(batch["input_ids"][0, :len(p.encode([1, 2], user="8")["input_ids"])],
                       torch.tensor(p.encode([1, 2], user="8")["input_ids"]))
    p.save_pretrained(tmp_path)
    assert RecSysGLMProcessor.from_pretrained(tmp_path).encode([1, 2], 3, user="7") == with_id
