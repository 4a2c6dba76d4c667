import ast
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genrec_hf.generation import CosineItemMapper, cut_at_stop, max_pooled_embeddings, rank_beams
from genrec_hf.generation import cosine as cosine_module

SEP = [7, 8]  # a two-token separator, like " ->"
EOS, PAD = 2, 1
FIRST_TEXT_TOKEN = 9  # ids below are special / separator tokens, never item text


def random_catalog(num_items: int, vocab: int, seed: int, max_len: int = 5) -> torch.Tensor:
    """Items with distinct token *sets* (max pooling cannot tell "a b" from "b a"), -1 padded."""
    rng = random.Random(seed)
    sets, rows = set(), []
    while len(rows) < num_items:
        row = [rng.randint(FIRST_TEXT_TOKEN, vocab - 1) for _ in range(rng.randint(1, max_len))]
        if frozenset(row) not in sets:
            sets.add(frozenset(row))
            rows.append(row)
    table = torch.full((num_items, max_len), -1)
    for i, row in enumerate(rows):
        table[i, : len(row)] = torch.tensor(row)
    return table


def tokens_of(table: torch.Tensor, item: int) -> list[int]:
    return [t for t in table[item].tolist() if t >= 0]


def padded(rows: list[list[int]], value: int = -1) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def make_mapper(num_items=50, vocab=60, dim=16, seed=0, **kwargs):
    torch.manual_seed(seed)
    weight = torch.randn(vocab, dim)
    table = random_catalog(num_items, vocab, seed)
    return CosineItemMapper(table, weight, [SEP, [EOS]], pad_token_id=PAD, **kwargs), table, weight


def test_module_is_self_contained():
    # it is linked into model folders for Hub remote code: torch / numpy / stdlib only
    tree = ast.parse(Path(cosine_module.__file__).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert roots <= {"__future__", "torch", "numpy", "math", "typing"}, roots


def test_max_pooling_hand_computed():
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, -5.0, -4.0], [-1.0, 1.0, 7.0]])
    ids = torch.tensor([[0, 2, -1], [-1, -1, -1], [1, 1, 3], [3, -1, 0]])
    expected = torch.tensor([[2.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.0, 3.0, 7.0], [1.0, 1.0, 7.0]])
    got = max_pooled_embeddings(ids, weight)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    # any negative id is padding, not just -1
    assert torch.equal(max_pooled_embeddings(torch.tensor([[0, -7, 2, -100]]), weight), expected[:1])


def test_max_pooling_rejects_ids_outside_the_matrix():
    with pytest.raises(ValueError, match="outside"):
        max_pooled_embeddings(torch.tensor([[0, 4]]), torch.randn(4, 3))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 49])
def test_chunked_equals_unchunked(chunk_size):
    mapper, table, weight = make_mapper()
    whole = max_pooled_embeddings(table, weight, chunk_size=10_000)
    assert torch.equal(max_pooled_embeddings(table, weight, chunk_size=chunk_size), whole)
    chunked = CosineItemMapper(table, weight, [SEP, [EOS]], pad_token_id=PAD, chunk_size=chunk_size)
    assert torch.equal(chunked.item_vectors, mapper.item_vectors)
    queries = torch.cat([table, torch.full((table.shape[0], 2), EOS)], dim=1)
    assert torch.equal(chunked.similarities(queries), mapper.similarities(queries))


@pytest.mark.parametrize("seed", range(3))
def test_every_item_maps_to_itself(seed):
    mapper, table, _ = make_mapper(seed=seed)
    item_ids, cos = mapper.map(table)
    assert torch.equal(item_ids, torch.arange(50))
    assert torch.allclose(cos, torch.ones(50), atol=1e-5)
    # the same texts as generated: separator, eos and junk after it
    generated = padded([tokens_of(table, i) + SEP + [30 + i % 20, EOS] for i in range(50)], value=PAD)
    assert torch.equal(mapper.map(generated)[0], torch.arange(50))


def test_cut_at_stop_hand_example():
    seqs = torch.tensor([
        [10, 11, 7, 8, 12, 2],   # separator at 2
        [10, 7, 11, 2, 7, 8],    # 7 alone is no separator; eos at 3 comes first
        [7, 8, 10, 11, 12, 13],  # separator first: empty
        [10, 1, 11, 12, 1, 1],   # no stop; pads anywhere are blanked
        [10, 11, 12, 13, 14, 7], # separator cut off by the end: no stop
    ])
    expected = torch.tensor([
        [10, 11, -1, -1, -1, -1],
        [10, 7, 11, -1, -1, -1],
        [-1, -1, -1, -1, -1, -1],
        [10, -1, 11, 12, -1, -1],
        [10, 11, 12, 13, 14, 7],
    ])
    got = cut_at_stop(seqs, [SEP, [EOS]], pad_token_id=PAD)
    assert torch.equal(got, expected)
    assert seqs[0, 2] == 7  # a copy: the input is untouched
    assert torch.equal(cut_at_stop(seqs, []), seqs)
    # a stop longer than the sequences cannot occur, and does not hide the others
    assert torch.equal(cut_at_stop(seqs, [[7] * 9, SEP, [EOS]], pad_token_id=PAD), expected)
    with pytest.raises(ValueError):
        cut_at_stop(seqs, [[]])


@pytest.mark.parametrize("seed", range(4))
def test_cut_at_stop_matches_a_python_loop(seed):
    rng = random.Random(seed)
    stops = [[rng.randint(0, 4) for _ in range(rng.randint(1, 3))] for _ in range(3)]
    seqs = torch.randint(0, 5, (200, 9), generator=torch.Generator().manual_seed(seed))

    def oracle(row):
        end = len(row)
        for stop in stops:
            for j in range(len(row) - len(stop) + 1):
                if row[j : j + len(stop)] == stop:
                    end = min(end, j)
                    break
        return [t if j < end and t != PAD else -1 for j, t in enumerate(row)]

    expected = torch.tensor([oracle(row) for row in seqs.tolist()])
    assert torch.equal(cut_at_stop(seqs, stops, pad_token_id=PAD), expected)


def test_tokens_after_the_separator_are_ignored():
    mapper, table, _ = make_mapper()
    text = tokens_of(table, 3)
    junk = tokens_of(table, 17) * 3
    base = mapper.map(torch.tensor([text]))
    for stop in (SEP, [EOS], [EOS] + SEP, SEP + [EOS]):
        item, cos = mapper.map(torch.tensor([text + stop + junk]))
        assert item.tolist() == [3] and torch.equal(cos, base[1])
    # the junk does matter when it is not cut off: without the cut the test above could not pass by accident
    assert mapper.map(torch.tensor([text + junk]))[0].item() != 3
    # a lone first token of the separator is text, not a stop
    assert not torch.equal(mapper.similarities(torch.tensor([text + [SEP[0]]])), mapper.similarities(torch.tensor([text])))


def test_padding_is_ignored():
    mapper, table, _ = make_mapper()
    text = tokens_of(table, 5)
    plain = mapper.similarities(torch.tensor([text]))
    with_pads = torch.tensor([[PAD] + text[:1] + [PAD, PAD] + text[1:] + [PAD]])
    assert torch.equal(mapper.similarities(with_pads), plain)
    # the item table's -1 padding: widening the table changes no vector
    wide = torch.cat([table, torch.full((50, 4), -1)], dim=1)
    other = CosineItemMapper(wide, mapper.embedding_weight, [SEP, [EOS]], pad_token_id=PAD)
    assert torch.equal(other.item_vectors, mapper.item_vectors)


def test_cosine_not_dot_product():
    # generated token 9 = [1, 0]; item 0's vector [10, 10] has the larger dot product (10 vs 0.5),
    # item 1's [0.5, 0.01] the larger cosine
    weight = torch.zeros(12, 2)
    weight[9] = torch.tensor([1.0, 0.0])
    weight[10] = torch.tensor([10.0, 10.0])
    weight[11] = torch.tensor([0.5, 0.01])
    mapper = CosineItemMapper(torch.tensor([[10], [11]]), weight, [SEP, [EOS]])
    item, cos = mapper.map(torch.tensor([[9, EOS]]))
    assert item.tolist() == [1]
    assert cos.item() == pytest.approx(0.5 / (0.5**2 + 0.01**2) ** 0.5, rel=1e-6)
    assert torch.allclose(mapper.item_vectors.norm(dim=1), torch.ones(2))


def test_scaling_the_embeddings_changes_nothing():
    mapper, table, weight = make_mapper()
    queries = torch.randint(FIRST_TEXT_TOKEN, 60, (30, 6), generator=torch.Generator().manual_seed(1))
    scaled = CosineItemMapper(table, weight * 37.0, [SEP, [EOS]], pad_token_id=PAD)
    # max pooling commutes with a positive scale, and cosine ignores it
    assert torch.allclose(scaled.similarities(queries), mapper.similarities(queries), atol=1e-6)
    assert torch.equal(scaled.map(queries)[0], mapper.map(queries)[0])


def test_similarities_equal_a_per_item_loop():
    mapper, table, weight = make_mapper(num_items=30, seed=2)
    queries = torch.randint(FIRST_TEXT_TOKEN, 60, (20, 7), generator=torch.Generator().manual_seed(2))
    queries[:5, 3] = EOS
    queries[5:8, 0] = SEP[0]
    queries[5:8, 1] = SEP[1]  # empty cut: cosine 0 with every item
    expected = torch.zeros(20, 30)
    for q in range(20):
        kept = cut_at_stop(queries[q : q + 1], [SEP, [EOS]], PAD)[0]
        kept = kept[kept >= 0]
        if kept.numel() == 0:
            continue
        generated = weight[kept].max(dim=0).values
        for i in range(30):
            item = weight[torch.tensor(tokens_of(table, i))].max(dim=0).values
            expected[q, i] = F.cosine_similarity(generated, item, dim=0)
    assert torch.allclose(mapper.similarities(queries), expected, atol=1e-5)
    assert (mapper.similarities(queries)[5:8] == 0).all()


def test_empty_cut_maps_to_nothing():
    mapper, table, _ = make_mapper()
    seqs = padded([SEP + tokens_of(table, 0), [EOS, 12, 13], [PAD, PAD, PAD], tokens_of(table, 4)], value=PAD)
    item, cos = mapper.map(seqs)
    assert item.tolist() == [-1, -1, -1, 4]
    assert torch.isinf(cos[:3]).all() and (cos[:3] < 0).all() and cos[3] > 0.99
    top, top_cos = mapper.top_items(seqs, 3)
    assert (top[:3] == -1).all() and torch.isinf(top_cos[:3]).all()
    assert top[3, 0] == 4


def test_top_items_ordering():
    mapper, table, _ = make_mapper()
    queries = torch.randint(FIRST_TEXT_TOKEN, 60, (25, 6), generator=torch.Generator().manual_seed(3))
    sims = mapper.similarities(queries)
    items, cos = mapper.top_items(queries, 10)
    assert items.shape == cos.shape == (25, 10)
    assert (cos[:, :-1] >= cos[:, 1:]).all()
    assert torch.equal(cos, sims.gather(1, items))
    assert torch.allclose(cos, sims.sort(dim=1, descending=True).values[:, :10])
    assert (items >= 0).all() and all(len(set(row)) == 10 for row in items.tolist())
    assert torch.equal(items[:, 0], mapper.map(queries)[0])
    # more slots than items: the rest is padding
    items, cos = mapper.top_items(queries[:2], 55)
    assert (items[:, :50] >= 0).all() and (items[:, 50:] == -1).all() and torch.isinf(cos[:, 50:]).all()
    assert sorted(items[0, :50].tolist()) == list(range(50))


def test_identical_vectors_first_item_wins():
    torch.manual_seed(0)
    weight = torch.randn(30, 8)
    # items 1 and 3 share a text; 4 is item 0's tokens reordered and repeated; 5 has no tokens
    table = padded([[10, 11, 12], [13, 14], [15], [13, 14], [12, 10, 11, 10], []])
    mapper = CosineItemMapper(table, weight, [SEP, [EOS]])
    assert mapper.candidate_items.tolist() == [0, 1, 2, 5]
    assert mapper.candidate_valid.tolist() == [True, True, True, False]
    item, _ = mapper.map(table)
    assert item.tolist() == [0, 1, 2, 1, 0, -1]
    sims = mapper.similarities(table)
    assert torch.equal(sims[:, 1], sims[:, 3]) and torch.equal(sims[:, 0], sims[:, 4])
    assert (sims[:, 5] == 0).all()  # an item with no tokens: cosine 0, but never returned
    items, _ = mapper.top_items(torch.tensor([[20, 21]]), 5)
    assert sorted(items[0, :3].tolist()) == [0, 1, 2] and items[0, 3:].tolist() == [-1, -1]


def test_bfloat16_weight():
    mapper, table, weight = make_mapper()
    half = weight.to(torch.bfloat16)
    bf = CosineItemMapper(table, half, [SEP, [EOS]], pad_token_id=PAD)
    # max only selects, so pooling bf16 rows equals pooling the same rows upcast
    assert bf.item_vectors.dtype == torch.float32
    assert torch.equal(max_pooled_embeddings(table, half), max_pooled_embeddings(table, half.float()))
    item, cos = bf.map(table)
    assert torch.equal(item, torch.arange(50)) and cos.dtype == torch.float32


def test_beams_to_deduplicated_items():
    mapper, table, _ = make_mapper()
    # 2 users x 4 beams, best beam first; beams 0 and 2 of user 0 spell the same item, beam 3 is empty
    beams = [
        tokens_of(table, 7) + SEP + [20], tokens_of(table, 9) + [EOS], tokens_of(table, 7) + [EOS], SEP,
        tokens_of(table, 1) + [EOS], tokens_of(table, 2) + [EOS], tokens_of(table, 3) + [EOS], tokens_of(table, 4),
    ]
    item, cos = mapper.map(padded(beams, value=PAD))
    scores = torch.tensor([[-0.1, -0.2, -0.3, -0.4], [-0.1, -0.2, -0.3, -0.4]])
    ranked, ranked_scores, valid = rank_beams(item.view(2, 4), scores, top_k=4, history_item_ids=torch.tensor([[-1], [2]]))
    assert ranked.tolist() == [[7, 9, -1, -1], [1, 3, 4, -1]]
    assert ranked_scores[0, :2].tolist() == pytest.approx([-0.1, -0.2])
    assert valid.tolist() == [3, 4]


def test_to_moves_every_tensor():
    mapper, table, _ = make_mapper()
    moved = mapper.to("cpu")
    assert moved is mapper and mapper.device == torch.device("cpu")
    assert mapper.all_distinct and mapper.candidate_vectors is mapper.item_vectors
    assert torch.equal(mapper.map(table)[0], torch.arange(50))
