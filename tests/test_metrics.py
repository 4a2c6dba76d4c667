import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec_hf.baselines import PopularityRecommender
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.metrics import rank_metrics, ranked_list_metrics, target_ranks


def reference_metrics(scores, targets, ks):
    """Brute force in plain Python, written from design.md §3 independently of genrec_hf.metrics
    (MRR counts ranks up to the largest cut-off)."""
    n_users = len(targets)
    sums = {f"hr@{k}": 0.0 for k in ks} | {f"ndcg@{k}": 0.0 for k in ks} | {"mrr": 0.0}
    for row, target in zip(scores, targets):
        t = row[target]
        others_ge = sum(1 for j, s in enumerate(row) if j != target and s >= t)
        rank = 1 + others_ge
        for k in ks:
            if rank <= k:
                sums[f"hr@{k}"] += 1
                sums[f"ndcg@{k}"] += 1 / math.log2(rank + 1)
        if rank <= max(ks):
            sums["mrr"] += 1 / rank
    return {key: v / n_users for key, v in sums.items()}


def reference_list_metrics(lists, targets, ks):
    sums = {f"hr@{k}": 0.0 for k in ks} | {f"ndcg@{k}": 0.0 for k in ks} | {"mrr": 0.0}
    for ranked, target in zip(lists, targets):
        seen = []
        for item in ranked:
            if item >= 0 and item not in seen:
                seen.append(item)
        if target in seen:
            rank = seen.index(target) + 1
            for k in ks:
                if rank <= k:
                    sums[f"hr@{k}"] += 1
                    sums[f"ndcg@{k}"] += 1 / math.log2(rank + 1)
            if rank <= max(ks):
                sums["mrr"] += 1 / rank
    return {key: v / len(targets) for key, v in sums.items()}


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 12),
    num_items=st.integers(1, 40),
    levels=st.integers(1, 4),  # few distinct score values -> many ties
    seed=st.integers(0, 2**31 - 1),
)
def test_rank_metrics_match_brute_force(batch, num_items, levels, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(batch, num_items)).astype(np.float32)
    targets = rng.integers(0, num_items, size=batch)
    ks = (1, 3, 5, 10)
    got = rank_metrics(torch.tensor(scores), torch.tensor(targets), ks)
    want = reference_metrics(scores.tolist(), targets.tolist(), ks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 10),
    length=st.integers(1, 12),
    num_items=st.integers(1, 8),  # small catalog -> duplicates in the lists
    seed=st.integers(0, 2**31 - 1),
)
def test_ranked_list_metrics_match_brute_force(batch, length, num_items, seed):
    rng = np.random.default_rng(seed)
    lists = rng.integers(-1, num_items, size=(batch, length))
    targets = rng.integers(0, num_items, size=batch)
    ks = (1, 2, 5)
    got = ranked_list_metrics(torch.tensor(lists), torch.tensor(targets), ks)
    want = reference_list_metrics(lists.tolist(), targets.tolist(), ks)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_constant_scores_give_zero():
    for value in (3.25, float("nan")):
        scores = torch.full((7, 50), value)
        metrics = rank_metrics(scores, torch.arange(7), ks=(1, 5, 10, 20))
        assert all(v == 0.0 for v in metrics.values()), metrics
    # ... while one item per user above the rest gets its due
    scores = torch.zeros(3, 50)
    scores[torch.arange(3), torch.tensor([4, 5, 6])] = 1.0
    assert rank_metrics(scores, torch.tensor([4, 5, 6]))["mrr"] == 1.0


def test_perfect_and_known_ranks():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2], [0.0, 1.0, 2.0]])
    targets = torch.tensor([1, 0, 0])  # ranks: 1, 2 (tie counts against), 3
    m = rank_metrics(scores, targets, ks=(1, 3))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@3"] == pytest.approx(3 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert rank_metrics(scores, targets, ks=(1, 2))["mrr"] == pytest.approx((1 + 1 / 2) / 3)  # rank 3 > K


def test_nan_scores_count_as_worst():
    scores = torch.tensor([[float("nan"), 0.0, 1.0]])
    assert rank_metrics(scores, torch.tensor([0]), ks=(3,))["hr@3"] == 1.0  # rank 3 of 3
    assert rank_metrics(scores, torch.tensor([0]), ks=(2,))["hr@2"] == 0.0


def test_nan_ranks_as_minus_inf_not_below_it():
    """A -inf target ties with a NaN item (both -inf): the pessimistic rank counts the NaN."""
    scores = torch.tensor([[float("-inf"), float("nan"), 1.0]])
    assert target_ranks(scores, torch.tensor([0])).tolist() == [3.0]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [3.0]


def test_scores_are_ranked_in_their_own_dtype():
    """float64 scores closer than float32 can tell apart must not become ties."""
    scores = torch.tensor([[1.0, 1.0 + 1e-12, 0.0]], dtype=torch.float64)
    assert target_ranks(scores, torch.tensor([1])).tolist() == [1.0]
    assert target_ranks(scores.float(), torch.tensor([1])).tolist() == [2.0]  # what a float32 cast did
    assert target_ranks(torch.tensor([[3, 5, 5]]), torch.tensor([1])).tolist() == [2.0]  # integer scores work


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown item id 5"):
        rank_metrics(torch.zeros(2, 5), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"scores must be \[batch, num_items\]"):
        rank_metrics(torch.zeros(5), torch.tensor([0]))
    with pytest.raises(ValueError, match="ks must be positive"):
        rank_metrics(torch.zeros(1, 5), torch.tensor([0]), ks=(0,))


class _ScoreTable:
    """A recommender whose scores are fixed per user: checks batching and per-user averaging."""

    def __init__(self, table):
        self.table = table

    def score_items(self, histories, users):
        return torch.stack([self.table[u] for u in users])


def test_evaluator_averages_per_user_across_batches():
    gen = torch.Generator().manual_seed(0)
    n_users, n_items = 37, 25
    table = {str(u): torch.randint(0, 3, (n_items,), generator=gen).float() for u in range(n_users)}
    split = {
        "user": [str(u) for u in range(n_users)],
        "history": [[u % n_items] for u in range(n_users)],
        "target": torch.randint(0, n_items, (n_users,), generator=gen).tolist(),
    }
    want = rank_metrics(torch.stack(list(table.values())), torch.tensor(split["target"]))
    for batch_size in (1, 8, 64):
        got = evaluate_recommender(_ScoreTable(table), split, batch_size=batch_size, progress=False)
        assert got.num_users == n_users
        for key in want:
            assert got.metrics[key] == pytest.approx(want[key], abs=1e-9)


def test_evaluate_module_agrees_with_library():
    import evaluate

    from genrec_hf.metrics import evaluate_module_path

    gen = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (20, 30), generator=gen).float()
    targets = torch.randint(0, 30, (20,), generator=gen)
    module = evaluate.load(evaluate_module_path())
    got = module.compute(predictions=scores.tolist(), references=targets.tolist())
    want = rank_metrics(scores, targets)
    assert got == pytest.approx(want, abs=1e-9)
    lists = torch.randint(-1, 30, (20, 10), generator=gen)
    module = evaluate.load(evaluate_module_path(), "ranked_list")
    got = module.compute(predictions=lists.tolist(), references=targets.tolist(), ks=(1, 5))
    assert got == pytest.approx(ranked_list_metrics(lists, targets, ks=(1, 5)), abs=1e-9)
    # float64 scores closer than float32 resolves are ranked as they are, not as ties
    close = [[1.0, 1.0 + 1e-12, 0.0]]
    assert evaluate.load(evaluate_module_path()).compute(predictions=close, references=[1], ks=(1,))["hr@1"] == 1.0


def test_popularity_recommender():
    pop = PopularityRecommender.fit([[0, 1, 1], [1, 2], [3]], num_items=5)
    out = pop.recommend([[4], [1, 0]], top_k=3)
    assert out.item_ids[0, 0].item() == 1
    assert set(out.item_ids[0, 1:].tolist()) <= {0, 2, 3}  # the count-1 items, in any order
    assert out.item_ids.shape == out.scores.shape == (2, 3)
    assert out.scores[0, 0].item() == 3
    excl = pop.recommend([[1]], top_k=2, exclude_history=True)
    assert 1 not in excl.item_ids[0].tolist()
    with pytest.raises(ValueError, match="empty history"):
        pop.recommend([[]])
    with pytest.raises(ValueError, match="unknown item id 9"):
        pop.recommend([[9]])
    with pytest.raises(ValueError, match="unknown item id 7"):
        PopularityRecommender.fit([[7]], num_items=5)
    # items with equal counts tie: pessimistic ranks make the evaluator score them alike
    split = {"user": ["a", "b"], "history": [[0], [0]], "target": [0, 2]}
    result = evaluate_recommender(pop, split, ks=(1, 3), progress=False)
    assert result.metrics["hr@1"] == 0.0  # item 0 ties with items 2 and 3 behind item 1
    assert result.metrics["hr@3"] == 0.0  # ranks 4 and 4: ties counted against the target
