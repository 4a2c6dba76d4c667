"""Shared generation machinery (design.md §4): the vectorised catalog trie as a LogitsProcessor
and beams -> ranked catalog items. Model folders that need it at load time carry `trie.py`
(a link to `genrec_hf/generation/trie.py`), so Hub remote code works."""

from .trie import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, prefix_allowed_tokens_oracle, rank_beams

__all__ = ["ITEM_BEAM_SEARCH", "TokenTrie", "TrieConstrainedLogitsProcessor", "prefix_allowed_tokens_oracle", "rank_beams"]
