import random

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, LogitsProcessorList

from genrec_hf.generation import TokenTrie, TrieConstrainedLogitsProcessor, prefix_allowed_tokens_oracle, rank_beams

EOS, PAD, START = 2, 1, 2


def random_catalog(num_items: int, vocab: int, seed: int, max_len: int = 4) -> torch.Tensor:
    rng = random.Random(seed)
    seqs = set()
    while len(seqs) < num_items:
        length = rng.randint(1, max_len)
        seqs.add(tuple(rng.randint(3, vocab - 1) for _ in range(length)) + (EOS,))
    seqs = sorted(seqs)
    rng.shuffle(seqs)
    table = torch.full((num_items, max_len + 1), -1)
    for i, s in enumerate(seqs):
        table[i, : len(s)] = torch.tensor(s)
    return table


@pytest.mark.parametrize("seed", range(5))
def test_trie_matches_a_python_trie_on_every_prefix(seed):
    vocab = 12 + seed * 5
    table = random_catalog(40, vocab, seed)
    trie = TokenTrie(table, vocab)
    oracle = prefix_allowed_tokens_oracle(table, prefix_length=1, eos_token_id=EOS)
    assert torch.equal(trie.items_of(table), torch.arange(40))
    for row in table.tolist():
        row = [t for t in row if t >= 0]
        for k in range(len(row) + 1):
            prefix = torch.tensor([[START] + row[:k]])
            mask = trie.allowed_mask(trie.walk(prefix[:, 1:]), vocab)[0]
            got = sorted(mask.nonzero().flatten().tolist()) or [EOS]
            assert got == sorted(oracle(0, prefix[0])), (row, k)


def test_off_trie_sequences_map_to_no_item():
    table = torch.tensor([[5, 6, EOS], [5, 7, EOS], [8, EOS, -1]])
    trie = TokenTrie(table, 10)
    gen = torch.tensor([[5, 6, EOS, PAD], [5, 9, EOS, PAD], [8, EOS, PAD, PAD], [5, EOS, PAD, PAD]])
    assert trie.items_of(gen).tolist() == [0, -1, 2, -1]
    with pytest.raises(ValueError, match="same token sequence"):
        TokenTrie(torch.tensor([[5, EOS], [5, EOS]]), 10)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenTrie(torch.tensor([[50, EOS]]), 10)


def _tiny_bart(vocab: int, seed: int = 0) -> BartForConditionalGeneration:
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=vocab, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS, decoder_start_token_id=START,
                        forced_eos_token_id=None)
    return BartForConditionalGeneration(config).eval()


@pytest.mark.parametrize("seed,num_beams", [(0, 4), (1, 8), (2, 10)])
def test_constrained_beam_search_matches_prefix_allowed_tokens_fn(seed, num_beams):
    vocab = 40
    table = random_catalog(60, vocab, seed)
    model = _tiny_bart(vocab, seed)
    inputs = torch.randint(3, vocab, (3, 7), generator=torch.Generator().manual_seed(seed))
    common = dict(input_ids=inputs, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=table.shape[1],
                  do_sample=False, output_scores=True, return_dict_in_generate=True, length_penalty=0.0,
                  early_stopping=True, eos_token_id=EOS, pad_token_id=PAD, decoder_start_token_id=START)
    fast = model.generate(**common, logits_processor=LogitsProcessorList(
        [TrieConstrainedLogitsProcessor(TokenTrie(table, vocab), prefix_length=1, eos_token_id=EOS)]))
    slow = model.generate(**common, prefix_allowed_tokens_fn=prefix_allowed_tokens_oracle(table, 1, EOS))
    assert torch.equal(fast.sequences, slow.sequences)
    assert torch.allclose(fast.sequences_scores, slow.sequences_scores)
    items = TokenTrie(table, vocab).items_of(fast.sequences[:, 1:])
    assert bool((items >= 0).all())  # every beam is a catalog item
    assert len(set(items.view(3, num_beams)[0].tolist())) == num_beams  # distinct items per row


def test_rank_beams_dedupes_drops_invalid_and_history():
    items = torch.tensor([[4, -1, 4, 7, 9, 2], [1, 1, 1, -1, -1, -1]])
    scores = torch.tensor([[-1.0, -1.5, -2.0, -3.0, -4.0, -5.0], [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6]])
    ids, ranked, valid = rank_beams(items, scores, top_k=4)
    assert ids.tolist() == [[4, 7, 9, 2], [1, -1, -1, -1]]
    assert ranked[0].tolist() == [-1.0, -3.0, -4.0, -5.0]
    assert ranked[1, 1:].eq(float("-inf")).all()
    assert valid.tolist() == [5, 3]
    ids, _, _ = rank_beams(items, scores, top_k=3, history_item_ids=torch.tensor([[7, -1], [5, 6]]))
    assert ids.tolist() == [[4, 9, 2], [1, -1, -1]]
    ids, _, _ = rank_beams(items, scores, top_k=8)  # more than beams: padded
    assert ids.shape == (2, 8) and ids[0, 5:].eq(-1).all()


class ScriptedLogProbs:
    """A LogitsProcessor that replaces the model's log-probs by a fixed table keyed by the tokens
    generated so far: the search alone decides which items come out."""

    def __init__(self, table: dict[tuple, dict[int, float]]):
        self.table = table

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, -1e4)
        for row, ids in enumerate(input_ids[:, 1:].tolist()):
            for token, logp in self.table.get(tuple(ids), {}).items():
                out[row, token] = logp
        return out


def test_item_beam_search_completes_the_longest_item_when_it_is_best():
    """Short items finish first; the best item is the longest. With early_stopping=True, search
    stops once num_beams hypotheses have finished and never completes it."""
    from genrec_hf.generation import ITEM_BEAM_SEARCH
    from genrec_hf.models import GenRecConfig, GenRecForConditionalGeneration

    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=32,
                        pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS, decoder_start_token_id=START, forced_eos_token_id=None)
    model = GenRecForConditionalGeneration(GenRecConfig(text_config=config, num_users=1, num_items=3, max_item_tokens=4)).eval()
    short, middle, longest = [10, EOS], [12, 21, EOS], [12, 20, 30, EOS]
    model.set_item_tokens(torch.tensor([short + [-1, -1], middle + [-1], longest]))
    scripted = ScriptedLogProbs({
        (): {12: -0.5, 10: -0.6},
        (10,): {EOS: 0.0},
        (12,): {20: 0.0, 21: -0.2},
        (12, 21): {EOS: 0.0},
        (12, 20): {30: 0.0},
        (12, 20, 30): {EOS: 0.0},
    })  # totals: longest -0.5 > short -0.6 > middle -0.7; short and middle finish while longest runs
    inputs = {"input_ids": torch.tensor([[0, 5, EOS]]), "token_user_ids": torch.full((1, 3), -1),
              "token_item_ids": torch.full((1, 3), -1)}
    assert model.generation_config.early_stopping == ITEM_BEAM_SEARCH["early_stopping"] == "never"
    out = model.recommend(**inputs, top_k=2, num_beams=2, logits_processor=LogitsProcessorList([scripted]))
    assert out.item_ids.tolist() == [[2, 0]]
    assert torch.allclose(out.scores, torch.tensor([[-0.5, -0.6]]))
    model.generation_config.early_stopping = True  # a checkpoint saved before the fix: recommend stays exact
    assert model.recommend(**inputs, top_k=2, num_beams=2, logits_processor=LogitsProcessorList([scripted])).item_ids.tolist() == [[2, 0]]
    stopped_early = model.recommend(**inputs, top_k=2, num_beams=2, early_stopping=True,
                                    logits_processor=LogitsProcessorList([scripted]))
    assert 2 not in stopped_early.item_ids.tolist()[0]  # the defect this setting fixes
