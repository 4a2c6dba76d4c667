"""RecSysGLM as one model for five task families (issue 11): templates, prompts, candidate
sampling, the multi-task collator, answer scoring and text generation on a tiny model."""

import json
import math
import textwrap

import numpy as np
import pytest
import torch

from genrec_hf.models.recsys_glm.task_prompts import FAMILIES, RecSysGLMTasks, check_templates, default_templates
from genrec_hf.training.recsys_glm import RecSysGLMMultiTaskCollator, explanation_target, recsys_glm_task_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(catalog):
    from test_hub import build_recsys_glm_toy

    return build_recsys_glm_toy(catalog)


def part_b(row):
    a = row["part_a_length"]
    return row["input_ids"][a:], row["labels"][a:], row["entity_ids"], row["position_ids"]


def entity_token_runs(row):
    """Part A's entities as token lists, in order."""
    a, ids, ents = row["part_a_length"], row["input_ids"], row["entity_ids"]
    runs, last = [], None
    for t, e in zip(ids[:a], ents[:a]):
        if e >= 0 and e == last:
            runs[-1].append(t)
        elif e >= 0:
            runs.append([t])
        last = e
    return runs


# -- templates ---------------------------------------------------------------------------------------

def test_shipped_templates_cover_every_family_with_seen_and_held_out():
    templates = check_templates(default_templates())
    assert set(templates) == set(FAMILIES)
    for family, rows in templates.items():
        assert {t["split"] for t in rows} == {"seen", "held_out"}, family
    direct = {t["answer"] for t in templates["direct"]}
    assert direct == {"yes_no", "choice"}


@pytest.mark.parametrize("broken, message", [
    ({"rating": [{"id": "a", "split": "seen", "prompt": "rate {item}"}]}, "exactly once"),
    ({"rating": [{"id": "a", "split": "seen", "prompt": "rate {itm} {answer}"}]}, "unknown placeholder"),
    ({"rating": [{"id": "a", "split": "train", "prompt": "{answer}"}]}, "split must be"),
    ({"rating": [{"id": "a", "split": "held_out", "prompt": "{item} {answer}"}]}, "at least one template must be seen"),
    ({"ratings": []}, "unknown task famil"),
    ({"direct": [{"id": "a", "split": "seen", "answer": "choice", "prompt": "{item} {answer}"}]}, "lists {candidates}"),
])
def test_broken_templates_are_refused(broken, message):
    with pytest.raises(ValueError, match=message):
        check_templates(broken)


# -- prompts -------------------------------------------------------------------------------------------

def test_each_family_writes_its_entities_and_answer(toy):
    _, p = toy
    tokens = p.item_tokens()
    end = p.special_token_ids()["end_token_id"]
    history = [1, 2, 3]

    row = p.encode_task("rating-1", user="7", history=history, item=5, answer=4)
    runs = entity_token_runs(row)
    # user, the history items, user again, the rated item: each an entity, in template order
    assert runs[1:4] == [tokens[i] for i in history] and runs[5] == tokens[5] and runs[0] == runs[4]
    ids, labels, _, _ = part_b(row)
    assert p.tokenizer.decode(labels[:-1]).strip() == "4" and labels[-1] == end

    row = p.encode_task("sequential-1", user="7", history=history, answer=9)
    ids, labels, _, positions = part_b(row)
    assert labels == tokens[9] + [end]
    assert positions[1][row["part_a_length"]:] == list(range(1, len(tokens[9]) + 2))  # one entity: 1..n+1

    row = p.encode_task("direct-2", user="7", history=history, candidates=[4, 9, 11], answer=9)
    assert entity_token_runs(row)[5:8] == [tokens[4], tokens[9], tokens[11]]  # after user, history, user
    assert part_b(row)[1] == tokens[9] + [end]
    row = p.encode_task("direct-1", user="7", history=history, item=4, answer=False)
    assert p.tokenizer.decode(part_b(row)[1][:-1]).strip() == "no"

    row = p.encode_task("summary-1", review="A calm and very long film.", answer="calm film")
    assert p.tokenizer.decode(part_b(row)[1][:-1]).strip() == "calm film"
    assert "A calm and very long film." in p.tokenizer.decode(row["input_ids"][:row["part_a_length"]])
    assert entity_token_runs(row) == []  # review words are not entities

    # inference rows: Part B is [START] alone, nothing labelled
    row = p.encode_task("rating-4", user="7", history=history, item=5)
    assert part_b(row)[0] == [p.special_token_ids()["start_token_id"]] and set(row["labels"]) == {-100}


def test_bad_task_input_gives_clear_errors(toy):
    _, p = toy
    with pytest.raises(ValueError, match="unknown template id 'rating-99'"):
        p.encode_task("rating-99", user="1", item=2)
    with pytest.raises(ValueError, match="rating 6 is out of range"):
        p.encode_task("rating-2", user="1", item=2, answer=6)
    with pytest.raises(ValueError, match="rating 3.5 is out of range"):
        p.encode_task("rating-2", user="1", item=2, answer=3.5)
    with pytest.raises(ValueError, match="empty review"):
        p.encode_task("summary-1", review="   ", answer="x")
    with pytest.raises(ValueError, match="empty answer text"):
        p.encode_task("summary-1", review="fine", answer="")
    with pytest.raises(ValueError, match="needs item="):
        p.encode_task("rating-2", user="1")
    with pytest.raises(ValueError, match="unknown item id 99"):
        p.encode_task("rating-2", user="1", item=99, answer=3)
    with pytest.raises(ValueError, match="not among the candidates"):
        p.encode_task("direct-2", user="1", history=[1], candidates=[2, 3], answer=4)


# -- candidates ----------------------------------------------------------------------------------------

def test_candidate_sampler_is_seeded_and_never_samples_target_or_history(toy):
    _, p = toy
    history = [0, 1, 2, 3, 4, 5]
    for seed in range(20):
        c = p.sample_candidates(10, history, num_negatives=12, rng=seed)
        assert len(c) == len(set(c)) == 13 and 10 in c and not set(c) & set(history)
        assert c == p.sample_candidates(10, history, num_negatives=12, rng=seed)
    assert p.sample_candidates(10, history, 12, rng=1) != p.sample_candidates(10, history, 12, rng=2)
    with pytest.raises(ValueError, match="only 17 items are new"):
        p.sample_candidates(10, history, num_negatives=18)


# -- multi-task training rows --------------------------------------------------------------------------

def test_task_dataset_mixes_families_by_weight_and_collator_uses_seen_templates_only(toy):
    from genrec_hf.data import load_sequences

    _, p = toy
    data = load_sequences("ml-100k")
    ds = recsys_glm_task_dataset(data, {"rating": 3, "sequential": 1, "direct": 1}, rows_per_epoch=500, seed=0,
                                 limit_users=40)
    counts = {f: ds["task"].count(f) for f in ("rating", "sequential", "direct")}
    assert counts == {"rating": 300, "sequential": 100, "direct": 100}
    assert set(ds["user"]) <= set(data.splits["train"]["user"][:40])
    # no rating row is a held-out (validation or test) interaction, and none sees its own item in the history
    held = data.feedback_splits()
    held_out = {(u, i) for split in ("valid", "test") for u, i in zip(held[split]["user"], held[split]["item"])}
    ratings = [r for r in ds if r["task"] == "rating"]
    assert not {(r["user"], r["item"]) for r in ratings} & held_out
    assert all(r["item"] not in r["items"] for r in ratings)
    for r in ratings:  # the newest (at most 50) items before the rated one
        seq = data.sequences[r["user"]]
        pos = seq.index(r["item"])
        assert r["items"] == seq[max(0, pos - 50):pos]

    # the toy processor has a toy catalog: map the ml-100k ids into it
    rows = [{**r, "items": [i % p.num_items for i in r["items"]][-6:], "item": r["item"] % p.num_items}
            for r in ds.select(range(120))]
    collator = RecSysGLMMultiTaskCollator(p, seed=0, choice_negatives=5)
    seen = set(p.template_ids(split="seen"))
    used = [collator.encode_row(r)["template_id"] for r in rows]
    assert set(used) <= seen and len(set(used)) >= 5
    batch = collator(rows[:8])
    assert batch["input_ids"].shape[0] == 8 and bool((batch["labels"] != -100).any(dim=1).all())


def test_feedback_families_need_feedback(tmp_path):
    from genrec_hf.data import load_sequences

    seq = tmp_path / "sequential_data.txt"
    seq.write_text("1 10 11 12 13\n2 10 12 13 14\n")
    data = load_sequences(seq, format="p5", k_core=0)
    assert len(recsys_glm_task_dataset(data, {"sequential": 1})) == 2
    with pytest.raises(ValueError, match="no ratings or reviews"):
        recsys_glm_task_dataset(data, {"sequential": 1, "rating": 1})
    with pytest.raises(ValueError, match="unknown task famil"):
        recsys_glm_task_dataset(data, {"ranking": 1})


def test_explanation_target_is_the_first_sentence():
    assert explanation_target("Great  colour. Lasts long!") == "Great colour."
    assert explanation_target("no sentence end") == "no sentence end"


# -- answers from the model ----------------------------------------------------------------------------

def test_answer_scores_agree_with_the_model_loss(toy):
    model, p = toy
    row = p.encode_task("rating-1", user="7", history=[1, 2, 3], item=5, answer=4)
    batch = p.task_batch([row])
    loglik = model.answer_log_likelihood(**batch)
    with torch.no_grad():
        loss = model(**{k: v for k, v in batch.items() if k != "history_item_ids"}).loss
    labelled = int((batch["labels"] != -100).sum())
    assert torch.allclose(loglik, -loss * labelled, atol=1e-4)


def test_rating_is_the_expectation_over_scored_values(toy):
    model, p = toy
    tasks = RecSysGLMTasks(model, p, batch_size=4)
    users, histories, items = ["1", "2"], [[1, 2], [3, 4, 5]], [6, 7]
    values, probs = tasks.rating_distribution(users, histories, items)
    assert values.tolist() == [1, 2, 3, 4, 5] and torch.allclose(probs.sum(-1), torch.ones(2))
    manual = torch.stack([
        model.answer_log_likelihood(**p.task_batch([p.encode_task("rating-1", user=u, history=h, item=i, answer=v)
                                                    for v in range(1, 6)]))
        for u, h, i in zip(users, histories, items)])
    assert torch.allclose(probs, manual.softmax(-1), atol=1e-5)
    expected = tasks.predict_rating(users, histories, items)
    assert torch.allclose(expected, (manual.softmax(-1) * values).sum(-1), atol=1e-4)
    assert bool(((expected >= 1) & (expected <= 5)).all())
    # a held-out template is a different prompt: a different prediction from the same model
    assert not torch.allclose(tasks.predict_rating(users, histories, items, template_id="rating-4"), expected)
    with pytest.raises(ValueError, match="is a direct template, not rating"):
        tasks.predict_rating(users, histories, items, template_id="direct-1")


def test_candidates_are_ranked_by_yes_no_and_by_choice(toy):
    model, p = toy
    tasks = RecSysGLMTasks(model, p, batch_size=8)
    cands = [[4, 9, 11], [0, 5, 6]]
    yes_no = tasks.rank_candidates(["1", "2"], [[1, 2], [3]], cands, template_id="direct-1")
    assert yes_no.shape == (2, 3) and bool((yes_no <= 0).all())  # log p(yes) normalised over yes / no
    choice = tasks.rank_candidates(["1", "2"], [[1, 2], [3]], cands, template_id="direct-5")
    one = model.answer_log_likelihood(**p.task_batch([p.encode_task("direct-5", user="2", history=[3], candidates=[0, 5, 6],
                                                                    answer=5)]))
    assert choice.shape == (2, 3) and torch.allclose(choice[1, 1], one[0], atol=1e-5)


def test_text_generation_positions_are_the_training_positions(toy):
    """A text answer trains with intra-positions 1..n+1; generation with plain_positions must
    give the generated tokens exactly those."""
    model, p = toy
    tasks = RecSysGLMTasks(model, p)
    texts = tasks.summarize(["A good film about a red river."], max_new_tokens=6, num_beams=2)
    assert len(texts) == 1 and isinstance(texts[0], str)
    prompt = p.task_batch([p.encode_task("summary-1", review="A good film about a red river.")])
    out = model.generate(**{k: v for k, v in prompt.items() if k not in ("labels", "entity_ids")}, plain_positions=True,
                         num_beams=1, do_sample=False, max_new_tokens=5, min_new_tokens=5, suppress_tokens=tasks.never_in_text(),
                         eos_token_id=p.special_token_ids()["end_token_id"], pad_token_id=p.tokenizer.pad_token_id)
    generated = out[0, prompt["input_ids"].shape[1]:].tolist()
    answer = p.tokenizer.decode(generated)
    trained = p.encode_task("summary-1", review="A good film about a red river.", answer=answer)
    model._plain_positions = True
    try:
        at_generation = model.generation_position_ids(out, torch.ones_like(out), prompt["position_ids"],
                                                      prompt["part_a_length"])
    finally:
        model._plain_positions = False
    width = prompt["input_ids"].shape[1]
    assert at_generation[0, 1, width:].tolist() == list(range(2, len(generated) + 2))
    a = trained["part_a_length"]
    n = sum(1 for label in trained["labels"] if label != -100) - 1  # the answer's tokens, without [END]
    assert trained["position_ids"][1][a:] == list(range(1, n + 2))  # [START] 1, then 2..n+1: the same rule


def test_templates_travel_with_a_saved_processor(toy, tmp_path, run_without_genrec_hf):
    _, p = toy
    p.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["settings"]["task_templates"]["rating"][0]["id"] == "rating-1" if "settings" in config else True
    assert (tmp_path / "task_prompts.py").is_file()
    row = p.encode_task("direct-4", user="3", history=[1, 2], item=7, answer=True)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["genrec_hf"] = None
        from transformers import AutoProcessor
        p = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert "genrec_hf" not in type(p).__module__
        row = p.encode_task("direct-4", user="3", history=[1, 2], item=7, answer=True)
        assert row["input_ids"] == {row["input_ids"]!r} and row["position_ids"] == {row["position_ids"]!r}
        assert type(p.task_runner(None)).__name__ == "RecSysGLMTasks"
        print("templates ok")
    """)
    run_without_genrec_hf(script, "templates ok")


# -- metrics -------------------------------------------------------------------------------------------

def test_text_overlap_module_on_hand_examples():
    import evaluate
    import sacrebleu

    from genrec_hf.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("text_overlap"))
    same = metric.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    assert same == pytest.approx({"bleu4": 100.0, "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    # by hand: 3 of the reference's 6 unigrams, 2 of its 5 bigrams, LCS 3; precision 1 throughout
    got = metric.compute(predictions=["the cat sat"], references=["the cat sat on the mat"])
    assert got["rouge1"] == pytest.approx(2 * 0.5 / 1.5) and got["rougeL"] == pytest.approx(2 * 0.5 / 1.5)
    assert got["rouge2"] == pytest.approx(2 * 0.4 / 1.4)
    preds, refs = ["a red river at night", "love story"], ["the red river by night", "a love story"]
    assert metric.compute(predictions=preds, references=refs)["bleu4"] == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs]).score)
    with pytest.raises(ValueError, match="unknown evaluate module"):
        evaluate_module_path("bleu")


def test_rating_errors_by_hand():
    from genrec_hf.metrics import rating_errors

    assert rating_errors([1, 2, 3], [2, 2, 5]) == pytest.approx({"rmse": math.sqrt(5 / 3), "mae": 1.0})
    with pytest.raises(ValueError, match="2 predictions for 3 ratings"):
        rating_errors([1, 2], [1, 2, 3])


def test_sequential_0_is_the_default_next_item_row(toy):
    """Multi-task training on sequential-0 trains the very row validation and recommend() use."""
    _, p = toy
    for history, target in (([1, 2, 3], 9), ([5], 0), ([7, 8, 9, 10, 11, 12], 4)):
        default = p.format.encode(history, target)
        task = p.encode_task("sequential-0", history=history, answer=target)
        for key in ("input_ids", "position_ids", "labels", "part_a_length"):
            assert task[key] == default[key], key


def test_review_tasks_pipeline_on_the_amazon_fixture(tmp_path):
    """Explanation and summary end to end on a small Amazon review file (2014/2018 and 2023 field
    names): feedback held out per user, a multi-task run, texts generated for held-out reviews and
    scored by the text_overlap module. Only the pipeline: the fixture is too small to learn from."""
    import os

    import evaluate

    from genrec_hf import RecSysGLMForInfilling
    from genrec_hf.data import load_sequences
    from genrec_hf.metrics import evaluate_module_path
    from genrec_hf.models.recsys_glm.processing_recsys_glm import RecSysGLMProcessor
    from genrec_hf.training.recipes import RecSysGLMTrainingConfig, train_recsys_glm

    here = os.path.join(os.path.dirname(__file__), "fixtures")
    data = load_sequences(os.path.join(here, "amazon_beauty_tiny_reviews.jsonl"), format="amazon",
                          item_file=os.path.join(here, "amazon_beauty_tiny_meta.jsonl"), k_core=0)
    assert data.stats()["users"] == 8 and data.stats()["items"] == 8
    splits = data.feedback_splits()
    assert all(splits["test"]["review"]) and all(splits["test"]["summary"])  # every fixture review has both
    cfg = RecSysGLMTrainingConfig(backbone="glm-tiny", pretrain_epochs=0, epochs=1, batch_size=4, eval_users=3, beam_size=4,
                                  max_items=4, progress=False, tasks={"explanation": 1, "summary": 1, "rating": 1},
                                  task_rows_per_epoch=12)
    train_recsys_glm(data, str(tmp_path), cfg, dataset_spec={"source": "amazon"})
    tasks = RecSysGLMTasks(RecSysGLMForInfilling.from_pretrained(tmp_path), RecSysGLMProcessor.from_pretrained(tmp_path))
    test = splits["test"].select(range(3))
    explanations = tasks.explain(test["user"], test["item"], max_new_tokens=6, num_beams=2)
    summaries = tasks.summarize(test["review"], users=test["user"], items=test["item"], template_id="summary-3",
                                max_new_tokens=4, num_beams=2)
    assert len(explanations) == len(summaries) == 3
    metric = evaluate.load(evaluate_module_path("text_overlap"))
    scores = metric.compute(predictions=[s or "-" for s in summaries], references=test["summary"])
    assert set(scores) == {"bleu4", "rouge1", "rouge2", "rougeL"} and all(0 <= v <= 100 for v in scores.values())


def test_a_first_rating_without_history_gets_a_template_without_history(toy):
    _, p = toy
    collator = RecSysGLMMultiTaskCollator(p, seed=0)
    row = {"task": "rating", "user": "5", "items": [], "item": 3, "rating": 4.0, "review": "", "summary": ""}
    used = {collator.encode_row(row)["template_id"] for _ in range(30)}
    assert used and all("{history}" not in p.template(t)[1]["prompt"] for t in used)
    assert used <= set(p.template_ids("rating", "seen"))


def test_single_token_yes_no_is_scored_from_one_row_per_candidate(catalog):
    """With a tokenizer where ' yes' and ' no' are one token each (the recipe trains it so), a
    candidate costs one forward: its score is log p(yes) normalised over {yes, no} at the first
    answer position of the inference row."""
    from genrec_hf.backbones import load_glm_backbone
    from genrec_hf.models.recsys_glm.processing_recsys_glm import RecSysGLMProcessor
    from genrec_hf.training.recipes import build_recsys_glm, task_vocabulary_texts

    torch.manual_seed(0)
    backbone, tokenizer, _ = load_glm_backbone("glm-tiny", texts=catalog.texts() + task_vocabulary_texts())
    p = RecSysGLMProcessor(tokenizer, catalog, max_items=4)
    model = build_recsys_glm(backbone, p, beam_size=4).eval()
    yes, no = (p.format.tasks.answer_tokens("yes_no", a)[0] for a in (True, False))
    assert len(yes) == len(no) == 1
    scores = RecSysGLMTasks(model, p).rank_candidates(["1"], [[1, 2]], [[4, 9, 11]], template_id="direct-1")
    batch = p.task_batch([p.encode_task("direct-1", user="1", history=[1, 2], item=9)])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "history_item_ids")}).logits[0, -1]
    pair = logits.log_softmax(-1)[[yes[0], no[0]]]
    assert torch.allclose(scores[0, 1], pair[0] - pair.logsumexp(-1), atol=1e-5)
