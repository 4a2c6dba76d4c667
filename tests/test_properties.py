"""Property tests (issue 13): loaders, the processor and `recommend` either give the documented
result or raise a clear error, never a silently wrong answer."""

import gzip

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_catalog
from genrec_hf import SASRecConfig, SASRecForSeqRec, SeqRecPipeline, SeqRecProcessor
from genrec_hf.data import DataFormatError, read_interaction_table, read_p5

NUM_ITEMS, MAX_ITEMS = 30, 6
ids = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=",\"'\ufeff"),
              min_size=1, max_size=8).filter(lambda t: t.strip() == t and t.split() == [t])
wrappings = st.sampled_from(["plain", "bom", "gzip", "gzip+bom"])


def _wrap(text: str, how: str) -> bytes:
    data = (b"\xef\xbb\xbf" if "bom" in how else b"") + text.encode()
    return gzip.compress(data) if how.startswith("gzip") else data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(ids, st.lists(ids, min_size=1, max_size=6), min_size=1, max_size=5), wrappings)
def test_p5_files_read_back_exactly_whatever_the_ids_and_wrapping(tmp_path, sequences, how):
    path = tmp_path / "sequences.txt"
    path.write_bytes(_wrap("".join(f"{u} {' '.join(items)}\n" for u, items in sequences.items()), how))
    raw = read_p5(path)
    assert raw.users == [u for u, items in sequences.items() for _ in items]
    assert raw.items == [i for items in sequences.values() for i in items]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(ids, ids, st.integers(0, 10**9)), min_size=1, max_size=8), wrappings)
def test_csv_tables_read_back_exactly_whatever_the_ids_and_wrapping(tmp_path, rows, how):
    path = tmp_path / "interactions.csv"
    path.write_bytes(_wrap("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows), how))
    raw = read_interaction_table(path)
    assert (raw.users, raw.items, raw.timestamps) == ([r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows])


@pytest.fixture(scope="module")
def pipeline(one_torch_thread):
    torch.manual_seed(0)
    catalog = make_catalog(NUM_ITEMS)
    model = SASRecForSeqRec(SASRecConfig(num_items=NUM_ITEMS, max_items=MAX_ITEMS, hidden_size=8, inner_size=16)).eval()
    return SeqRecPipeline(model, SeqRecProcessor(None, catalog, method="sasrec", max_items=MAX_ITEMS))


histories = st.lists(st.lists(st.integers(0, NUM_ITEMS - 1), min_size=1, max_size=40), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(histories)
def test_the_processor_keeps_the_newest_items_of_any_valid_history(pipeline, batch):
    out = pipeline.processor(batch)
    for row, history in enumerate(batch):
        window = history[-MAX_ITEMS:]
        kept = out["input_ids"][row][out["attention_mask"][row].bool()].tolist()
        assert kept == [i + 1 for i in window]  # ids shifted by one: 0 pads
        assert [i for i in out["history_item_ids"][row].tolist() if i >= 0] == history  # all of it, for exclusion


@settings(max_examples=60, deadline=None)
@given(histories, st.integers(1, NUM_ITEMS + 5), st.booleans())
def test_recommend_returns_distinct_catalog_items_best_first_and_hides_the_seen_ones(pipeline, batch, top_k, exclude):
    with torch.no_grad():
        out = pipeline.recommend(batch, top_k=top_k, exclude_history=exclude)
    for row, history in enumerate(batch):
        items = [i for i in out.item_ids[row].tolist() if i >= 0]
        available = NUM_ITEMS - (len(set(history)) if exclude else 0)
        assert len(items) == min(top_k, available) and len(set(items)) == len(items)
        assert all(0 <= i < NUM_ITEMS for i in items)
        if exclude:
            assert not set(items) & set(history)
        scores = out.scores[row][: len(items)]
        assert torch.all(scores[:-1] >= scores[1:])


bad_ids = st.one_of(st.integers(max_value=-1), st.integers(min_value=NUM_ITEMS), st.floats(allow_nan=True),
                    st.booleans(), st.text(max_size=3), st.none())


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, NUM_ITEMS - 1), max_size=5), bad_ids, st.integers(0, 5))
def test_an_unknown_or_non_integer_id_is_named_never_truncated(pipeline, history, bad, position):
    history = list(history)
    history.insert(min(position, len(history)), bad)
    with pytest.raises(ValueError, match=r"unknown item id|not an integer catalog id") as err:
        pipeline.processor([history])
    assert repr(bad) in str(err.value) or str(bad) in str(err.value)


def test_empty_histories_and_flat_lists_are_refused_clearly(pipeline):
    with pytest.raises(ValueError, match="empty history in row 1"):
        pipeline.processor([[1, 2], []])
    with pytest.raises(ValueError, match=r"a list of histories"):
        pipeline.processor([1, 2, 3])
    with pytest.raises(ValueError, match="integer item ids, got dtype torch.float32"):
        pipeline.processor(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"row 0 must be a list of item ids"):
        pipeline.processor(["1 2 3"])
    assert pipeline.processor([torch.tensor([3, 4])])["input_ids"].tolist() == [[4, 5]]  # 0-d tensors are ids


def test_a_comma_separated_file_read_as_p5_is_never_a_silent_user(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("u1,a,1\nu1,b,2\n")
    with pytest.raises(DataFormatError, match="looks comma-separated"):
        read_p5(path)


EOS = 2
catalogs = st.lists(st.lists(st.integers(3, 40), min_size=1, max_size=5).map(lambda s: tuple(s) + (EOS,)),
                    min_size=1, max_size=30, unique=True)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(catalogs, st.lists(st.integers(0, 40), max_size=6))
def test_the_trie_allows_exactly_the_catalog_continuations_of_any_prefix(sequences, stray):
    """Dense and listed nodes alike: the allowed set after any prefix is what the catalog spells, a
    string off the catalog gets nothing, and every item's full tokens name that item."""
    from genrec_hf.generation import TokenTrie

    width = max(map(len, sequences))
    table = torch.full((len(sequences), width), -1)
    for i, s in enumerate(sequences):
        table[i, : len(s)] = torch.tensor(s)
    trie = TokenTrie(table, vocab_size=41)
    assert trie.items_of(table).tolist() == list(range(len(sequences)))
    prefixes = {s[:k] for s in sequences for k in range(len(s))} | {tuple(stray)}
    for prefix in prefixes:
        expected = {s[len(prefix)] for s in sequences if len(s) > len(prefix) and s[: len(prefix)] == prefix}
        if any(s == prefix for s in sequences):  # a complete item: nothing continues it
            expected = set()
        tokens = torch.tensor([list(prefix)], dtype=torch.long).reshape(1, -1)
        mask = trie.allowed_mask(trie.walk(tokens), 41)[0]
        assert set(mask.nonzero().flatten().tolist()) == expected, prefix
