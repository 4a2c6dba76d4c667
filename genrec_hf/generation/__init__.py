"""Shared generation machinery (design.md §4): the vectorised catalog trie as a LogitsProcessor
and beams -> ranked catalog items. Model folders that need it at load time carry `trie.py`
(a link to `genrec_hf/generation/trie.py`), so Hub remote code works. `cosine.py` maps free
generated text to catalog items by cosine similarity of max-pooled input embeddings (LANCER)."""

from .cosine import CosineItemMapper, cut_at_stop, max_pooled_embeddings
from .trie import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, prefix_allowed_tokens_oracle, rank_beams

__all__ = [
    "CosineItemMapper", "cut_at_stop", "max_pooled_embeddings",
    "ITEM_BEAM_SEARCH", "TokenTrie", "TrieConstrainedLogitsProcessor", "prefix_allowed_tokens_oracle", "rank_beams",
]
