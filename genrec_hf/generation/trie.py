"""A token trie of every catalog item, held as tensors, the vectorised constraint built on it,
and the mapping of beams to a ranked, deduplicated list of catalog items.

`TokenTrie` stores the trie in CSR form (edges sorted by (parent, token)); one step for a whole
batch of beams is a `searchsorted`, and the allowed tokens of every beam are one ragged gather
(plus one row copy for beams at a node with many children, whose allowed tokens are kept as a
dense row), so `TrieConstrainedLogitsProcessor` masks all beams of all rows at once with no
Python loop over beams (HF's `prefix_allowed_tokens_fn` calls back into Python per beam per step).

State is derived from the (reordered) `input_ids` at every step: beam search only reorders the
cache, so per-beam state kept elsewhere would go stale.

Self-contained (torch and transformers only): model folders that decode with it carry a copy,
so Hub remote code works.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from transformers import LogitsProcessor


# Beam-search settings for ranking catalog items by their full log-probability: no length
# penalty (an item's score is the sum of its tokens' log-probs) and `early_stopping="never"`,
# HF's exact search. With `True`, search stops once `num_beams` hypotheses have finished, so a
# longer item that would still outscore them is never completed.
ITEM_BEAM_SEARCH = {"length_penalty": 0.0, "early_stopping": "never"}

# A node whose children are at least 1/DENSE_SHARE of the token ids keeps them as a dense boolean row
# too (memory: at most DENSE_SHARE bytes per edge): copying that row costs less than scattering its
# edges one by one (a catalog's root often has thousands of children, and every beam starts there).
DENSE_SHARE = 8


class AllowedTokens(NamedTuple):
    """The tokens that continue each of a batch of nodes (`TokenTrie.allowed_tokens`)."""

    rows: torch.Tensor  # [n] rows at a node with few children, one entry per allowed token ...
    tokens: torch.Tensor  # [n] ... and that token
    dense_rows: torch.Tensor  # [m] rows at a node with many children ...
    dense_masks: torch.Tensor  # [m, width] ... and their allowed tokens among ids 0..width-1
    stuck: torch.Tensor  # [k] rows with no continuation (off the trie, or at a leaf)


class TokenTrie:
    """All catalog items' token sequences (each ending with eos) as a trie.

    Args:
        sequences: LongTensor [num_items, max_len], row i = item i's tokens, padded with -1.
            Every row must be non-empty.
        duplicates: "error" (rows must be unique) or "first" (items with the same tokens share a
            leaf, which names the first of them: generation cannot tell them apart).
    Attributes (tensors): edge_keys [E] (parent * vocab + token, sorted), edge_child [E],
        edge_token [E], node_offsets [num_nodes + 1] (CSR over edges by parent),
        leaf_item [num_nodes] (catalog id of a complete sequence, else -1), dense_index
        [num_nodes] (row in dense_masks of a node with many children, else -1), dense_masks
        [num_dense, max token + 1] (bool).
    """

    def __init__(self, sequences: torch.Tensor, vocab_size: int, duplicates: str = "error"):
        if duplicates not in ("error", "first"):
            raise ValueError(f"duplicates must be 'error' or 'first', got {duplicates!r}")
        seqs = torch.as_tensor(sequences).long().cpu().numpy()
        if seqs.ndim != 2 or seqs.shape[0] == 0:
            raise ValueError("the trie needs a non-empty [num_items, max_len] token table")
        if (seqs[:, 0] < 0).any():
            raise ValueError(f"item {int(np.argmax(seqs[:, 0] < 0))} has no tokens")
        if seqs.max() >= vocab_size:
            raise ValueError(f"token id {int(seqs.max())} is outside the vocabulary ({vocab_size})")
        self.vocab_size = int(vocab_size)
        num_items, max_len = seqs.shape
        node = np.zeros(num_items, dtype=np.int64)  # current node of each item's path
        keys, children = [], []
        num_nodes = 1
        for depth in range(max_len):
            tok = seqs[:, depth]
            live = tok >= 0
            if not live.any():
                break
            key = node[live] * self.vocab_size + tok[live]
            unique, inverse = np.unique(key, return_inverse=True)
            child = num_nodes + np.arange(len(unique), dtype=np.int64)
            keys.append(unique)
            children.append(child)
            node[live] = child[inverse.reshape(-1)]
            num_nodes += len(unique)
        edge_keys = np.concatenate(keys)
        # new nodes get larger ids than their parents, so keys of deeper levels sort after: one sorted array
        assert (np.diff(edge_keys) > 0).all()
        leaf_item = np.full(num_nodes, -1, dtype=np.int64)
        if len(np.unique(node)) != num_items and duplicates == "error":
            dup = np.flatnonzero(np.bincount(node, minlength=num_nodes)[node] > 1)[:2].tolist()
            raise ValueError(f"items {dup} have the same token sequence: the trie cannot tell them apart")
        first = np.full(num_nodes, num_items, dtype=np.int64)
        np.minimum.at(first, node, np.arange(num_items))  # a shared leaf names its first item
        leaf_item = np.where(first < num_items, first, leaf_item)
        parents = edge_keys // self.vocab_size
        self.edge_keys = torch.from_numpy(edge_keys)
        self.edge_child = torch.from_numpy(np.concatenate(children))
        self.edge_token = torch.from_numpy(edge_keys % self.vocab_size)
        self.node_offsets = torch.from_numpy(np.searchsorted(parents, np.arange(num_nodes + 1)))
        self.leaf_item = torch.from_numpy(leaf_item)
        degree, tokens = np.diff(self.node_offsets.numpy()), self.edge_token.numpy()
        width = int(tokens.max()) + 1
        dense_nodes = np.flatnonzero(degree * DENSE_SHARE >= width)
        dense_index = np.full(num_nodes, -1, dtype=np.int64)
        dense_index[dense_nodes] = np.arange(len(dense_nodes))
        dense_masks = np.zeros((len(dense_nodes), width), dtype=bool)
        in_dense = dense_index[parents] >= 0
        dense_masks[dense_index[parents[in_dense]], tokens[in_dense]] = True
        self.dense_index = torch.from_numpy(dense_index)
        self.dense_masks = torch.from_numpy(dense_masks)
        self.num_items = num_items
        self.num_nodes = num_nodes
        self.max_len = max_len

    def to(self, device) -> "TokenTrie":
        for name in ("edge_keys", "edge_child", "edge_token", "node_offsets", "leaf_item", "dense_index", "dense_masks"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.edge_keys.device

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node by each token ([batch] each); -1 where there is no such edge."""
        key = nodes * self.vocab_size + tokens
        idx = torch.searchsorted(self.edge_keys, key).clamp(max=self.edge_keys.numel() - 1)
        found = (self.edge_keys[idx] == key) & (nodes >= 0) & (tokens >= 0)
        return torch.where(found, self.edge_child[idx], torch.full_like(nodes, -1))

    def walk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of tokens [batch, length] from the root (-1 = left the trie).

        A row that completes an item stays on its leaf (later padding is ignored).
        """
        nodes = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        for t in range(tokens.shape[1]):
            at_leaf = (nodes >= 0) & (self.leaf_item[nodes.clamp(min=0)] >= 0)
            nodes = torch.where(at_leaf, nodes, self.step(nodes, tokens[:, t]))
        return nodes

    def items_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Catalog id spelled by each row of generated tokens [batch, length]; -1 if none."""
        nodes = self.walk(tokens)
        return torch.where(nodes >= 0, self.leaf_item[nodes.clamp(min=0)], torch.full_like(nodes, -1))

    def allowed_tokens(self, nodes: torch.Tensor) -> AllowedTokens:
        """The tokens that continue each node ([batch]; none for -1 / leaves): as (row, token) pairs
        for nodes with few children, as dense rows for nodes with many."""
        safe = nodes.clamp(min=0)
        start = self.node_offsets[safe]
        degree = torch.where(nodes >= 0, self.node_offsets[safe + 1] - start, torch.zeros_like(start))
        dense = torch.where(nodes >= 0, self.dense_index[safe], torch.full_like(safe, -1))
        dense_rows = torch.nonzero(dense >= 0).squeeze(1)
        stuck = torch.nonzero(degree == 0).squeeze(1)
        degree = degree.masked_fill(dense >= 0, 0)  # dense rows: their edges are not listed
        rows = torch.repeat_interleave(torch.arange(nodes.shape[0], device=nodes.device), degree)
        # edge of each pair: its node's first edge + its rank among that node's listed edges
        rank = torch.arange(rows.numel(), device=nodes.device) - (degree.cumsum(0) - degree)[rows]
        return AllowedTokens(rows, self.edge_token[start[rows] + rank], dense_rows,
                             self.dense_masks[dense[dense_rows]], stuck)

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """BoolTensor [batch, vocab]: the tokens that continue each node (none for -1 / leaves)."""
        allowed = self.allowed_tokens(nodes)
        mask = torch.zeros(nodes.shape[0], vocab_size or self.vocab_size, dtype=torch.bool, device=nodes.device)
        mask[allowed.rows, allowed.tokens] = True
        mask[allowed.dense_rows, : self.dense_masks.shape[1]] = allowed.dense_masks
        return mask


class TrieConstrainedLogitsProcessor(LogitsProcessor):
    """Only tokens that continue a catalog item survive; a beam off the trie may only end (eos).

    Args:
        trie: the catalog's TokenTrie.
        prefix_length: tokens of `input_ids` before generation starts (1 for an encoder-decoder's
            decoder start token; the prompt length for a decoder-only model).
        eos_token_id: the token that ends an item (the trie's sequences end with it).
    """

    def __init__(self, trie: TokenTrie, prefix_length: int, eos_token_id: int):
        self.trie = trie
        self.prefix_length = prefix_length
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.trie.device != input_ids.device:
            self.trie.to(input_ids.device)
        nodes = self.trie.walk(input_ids[:, self.prefix_length:])
        allowed = self.trie.allowed_tokens(nodes)
        # the allowed scores copied into rows of -inf (cheaper than building and applying a full mask)
        out = torch.full_like(scores, float("-inf"))
        rows, tokens = allowed.rows, allowed.tokens
        out[rows, tokens] = scores[rows, tokens]
        rows, width = allowed.dense_rows, self.trie.dense_masks.shape[1]
        out[rows, :width] = torch.where(allowed.dense_masks, scores[rows, :width], float("-inf"))
        out[allowed.stuck, self.eos_token_id] = scores[allowed.stuck, self.eos_token_id]  # only eos may follow
        return out


def rank_beams(
    items: torch.Tensor, scores: torch.Tensor, top_k: int, history_item_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Beams -> ranked catalog items (design.md §3).

    items: LongTensor [batch, beams], the catalog id of each beam (-1 = invalid), best beam first.
    scores: FloatTensor [batch, beams]. history_item_ids: [batch, length] (-1 pads) to exclude.
    Returns item_ids [batch, top_k] (-1 pads), their scores (-inf pads) and the number of
    valid beams per row. A beam repeating an item ranked higher is dropped; so are invalid beams.
    """
    batch, beams = items.shape
    valid = items >= 0
    same = items[:, :, None] == items[:, None, :]
    earlier = torch.ones(beams, beams, dtype=torch.bool, device=items.device).tril(-1)
    keep = valid & ~(same & earlier & valid[:, None, :]).any(dim=2)
    if history_item_ids is not None:
        hist = history_item_ids.to(items.device)
        keep &= ~((items[:, :, None] == hist[:, None, :]) & (hist[:, None, :] >= 0)).any(dim=2)
    # a stable sort moves kept beams to the front, keeping beam (= score) order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :top_k]
    kept = keep.gather(1, order)
    item_ids = torch.where(kept, items.gather(1, order), torch.full_like(order, -1))
    ranked = torch.where(kept, scores.gather(1, order), torch.full(order.shape, float("-inf"), device=scores.device, dtype=scores.dtype))
    if item_ids.shape[1] < top_k:
        pad = top_k - item_ids.shape[1]
        item_ids = torch.nn.functional.pad(item_ids, (0, pad), value=-1)
        ranked = torch.nn.functional.pad(ranked, (0, pad), value=float("-inf"))
    return item_ids, ranked, valid.sum(dim=1)


def prefix_allowed_tokens_oracle(sequences: torch.Tensor, prefix_length: int, eos_token_id: int):
    """The slow reference: a Python dict trie behind HF's `prefix_allowed_tokens_fn`.

    Only for tests and benchmarks (one Python call per beam per step).
    """
    root: dict = {}
    for row in torch.as_tensor(sequences).tolist():
        node = root
        for tok in row:
            if tok < 0:
                break
            node = node.setdefault(tok, {})

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = root
        for tok in sent[prefix_length:].tolist():
            if tok not in node:
                return [eos_token_id]
            node = node[tok]
        return list(node) if node else [eos_token_id]

    return allowed


def repeat_factor(*tensors: torch.Tensor | None) -> int:
    """k if the batch is made of consecutive groups of k identical rows (k > 1), else 1: beam search
    repeats each prompt k times, and a model can then run the prompt once per user."""
    tensors = [t for t in tensors if t is not None]
    batch = tensors[0].shape[0]
    if batch < 2:
        return 1
    flat = torch.cat([t.reshape(batch, -1).long() for t in tensors], dim=1)
    same = (flat[1:] == flat[:-1]).all(dim=1)
    k = int(same.long().cumprod(0).sum()) + 1  # length of the first run of identical rows
    if k == 1 or batch % k:
        return 1
    groups = flat.view(batch // k, k, -1)
    return k if bool((groups == groups[:, :1]).all()) else 1
