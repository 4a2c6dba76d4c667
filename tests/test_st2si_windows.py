"""ST2SI training windows: the official code's random (start, target) span, drawn afresh every
epoch through the unchanged Trainer, and the exact state cache of the ILP path."""

import random
from collections import Counter

import pytest
import torch
from transformers import Trainer, TrainingArguments

from genrec_hf.training import (
    QueryStateCollator,
    RandomWindowRows,
    RandomWindowStates,
    SeqRecCollator,
    draw_training_span,
    extract_query_states,
)
from genrec_hf.training.st2si import check_windows, training_windows


def test_draws_follow_the_official_sampling_and_reach_every_transition():
    rng = random.Random(0)
    seq, max_items = list(range(30)), 5
    targets, lengths = Counter(), Counter()
    for _ in range(20000):
        first, target = draw_training_span(seq, max_items, rng)
        assert 0 <= first < target <= len(seq) - 1
        assert target - first <= max_items
        targets[target] += 1
        lengths[target - first] += 1
    assert set(targets) == set(range(1, 30))  # every transition is trained over the epochs
    assert set(lengths) == set(range(1, max_items + 1))  # short spans too (start close to target)
    # P(target = t) = sum over start < t of 1/(n-1) * 1/(n-1-start): later targets are likelier
    assert targets[29] > targets[1]
    with pytest.raises(ValueError, match="at least two items"):
        draw_training_span([3], 5, rng)


def test_draws_match_the_exact_distribution_of_the_official_sampler():
    """start ~ U[0, n-2], target ~ U[start+1, n-1], first = max(start, target - max_items)."""
    n, max_items, draws = 7, 3, 60000
    exact = Counter()
    for start in range(n - 1):
        for target in range(start + 1, n):
            exact[(max(start, target - max_items), target)] += 1 / (n - 1) / (n - 1 - start)
    rng = random.Random(1)
    seen = Counter(draw_training_span(list(range(n)), max_items, rng) for _ in range(draws))
    assert set(seen) == set(exact)
    assert max(abs(seen[k] / draws - p) for k, p in exact.items()) < 0.006


def test_window_settings_are_checked():
    assert check_windows("random") == "random" and check_windows("3") == 3 and check_windows(2) == 2
    for bad in ("none", "0", 0, -1, True):
        with pytest.raises(ValueError, match="windows must be"):
            check_windows(bad)
    with pytest.raises(ValueError, match="drawn per epoch"):
        training_windows([1, 2, 3], 2, "random")


def test_rows_are_drawn_afresh_each_read_and_reproducible(st2si_factory):
    _, processor = st2si_factory(max_items=4)
    sequences = [list(range(0, 12)), list(range(5, 20)), [3]]  # the one-item user has no span
    a = RandomWindowRows(processor, sequences, fixed_rows=[{"input_ids": [1, 2], "labels": [7]}], seed=3)
    b = RandomWindowRows(processor, sequences, seed=3)
    assert len(a) == 3 and a[2] == {"input_ids": [1, 2], "labels": [7]}
    reads = [a[0]["input_ids"] for _ in range(8)]
    assert len({tuple(r) for r in reads}) > 1  # a new span each read
    assert reads == [b[0]["input_ids"] for _ in range(8)]  # same seed, same draws
    row = a[1]
    assert row["labels"][-1] != -100 and len(row["labels"]) <= 4
    # the k-th read of a row gets the same span whatever order the rows are read in
    c, d = RandomWindowRows(processor, sequences, seed=3), RandomWindowRows(processor, sequences, seed=3)
    c_reads = [(c[1]["input_ids"], c[0]["input_ids"]) for _ in range(3)]  # row 1 first
    d_reads = [(d[0]["input_ids"], d[1]["input_ids"]) for _ in range(3)]  # row 0 first
    assert [r[1] for r in c_reads] == [r[0] for r in d_reads] and [r[0] for r in c_reads] == [r[1] for r in d_reads]
    other_seed = RandomWindowRows(processor, sequences, seed=4)
    assert [other_seed[0]["input_ids"] for _ in range(8)] != reads  # another seed, other spans


def test_trainer_sees_new_windows_every_epoch(st2si_factory, tmp_path):
    model, processor = st2si_factory(max_items=4)
    train = RandomWindowRows(processor, [list(range(0, 16)), list(range(4, 20))], seed=0)
    seen = []

    class Recording(SeqRecCollator):
        def __call__(self, features):
            seen.append(tuple(tuple(f["input_ids"]) for f in features))
            return super().__call__(features)

    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=4, per_device_train_batch_size=2,
                             report_to="none", use_cpu=True, save_strategy="no", learning_rate=1e-3)
    Trainer(model=model, args=args, train_dataset=train, data_collator=Recording(processor)).train()
    assert len(seen) == 4  # one batch (both users) per epoch
    assert len(set(seen)) > 1


@pytest.mark.parametrize("multi_query", [True, False])
def test_cached_window_states_equal_states_of_the_window_alone(st2si_factory, multi_query):
    model, processor = st2si_factory(tune_mode="ilp", max_items=4, multi_query=multi_query)
    model.eval()
    sequences = [list(range(0, 14)), list(range(6, 22))]
    states = RandomWindowStates(model, processor, sequences, fixed_states=[(torch.ones(64), 5)], seed=1, batch_size=3)
    replay = RandomWindowRows(processor, sequences, seed=1)  # the same generator: the same draws
    for _ in range(6):
        batch = states.__getitems__([0, 1, 2])
        for index in (0, 1):
            items, target, _ = replay.draw(index)
            row = processor.encode(items, target)
            direct = extract_query_states(model, processor, [row], progress=False)[0]
            assert torch.allclose(batch[index]["query_hidden_states"], direct, atol=1e-5)
            assert batch[index]["labels"].tolist() == row["labels"]
        assert batch[2]["labels"].tolist() == [5]
    if multi_query:  # cached passes cover max_items from their start, longer than most windows they serve
        assert any(v.shape[0] == 4 for v in states.cache.values())
    # validation rows of ilp_feature_datasets are one query each ([hidden]): one query slot, not `hidden`
    valid = QueryStateCollator()([{"query_hidden_states": torch.zeros(64), "labels": 3}, {"query_hidden_states": torch.ones(64), "labels": 1}])
    assert valid["query_hidden_states"].shape == (2, 1, 64) and valid["labels"].tolist() == [[3], [1]]
    assert model(**valid).logits.shape == (2, 1, len(processor.catalog))
    padded = QueryStateCollator()(batch)
    assert padded["query_hidden_states"].shape[:2] == padded["labels"].shape == padded["query_mask"].shape
    assert bool((padded["labels"][~padded["query_mask"]] == -100).all())
    out = model(**padded)
    assert torch.isfinite(out.loss)
