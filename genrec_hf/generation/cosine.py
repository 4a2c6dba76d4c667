"""Generated text -> catalog items by cosine similarity of max-pooled input embeddings
(LANCER §3.4, eq. 12).

A decoder LM continues a prompt such as "A user watched sequence of movies: Toy Story -> Heat ->"
with free text. Each generated sequence is cut at its first stop sequence (the separator's token
ids, eos); the rows of the LM's input embedding matrix for the tokens left are max-pooled into one
vector, and that vector is matched against every catalog item's vector (the same max pool over the
item's own text tokens, built once and L2-normalised) with one matrix product, so a batch of beams
is mapped with no Python loop over beams or items.

Max pooling ignores token order and repeats: items whose texts use the same set of tokens ("A B"
and "B A", or two items with one title) get the same vector and cannot be told apart. Such items
form one candidate, answered by its lowest item id; the others are never returned by `map` or
`top_items` (`similarities` still gives every item its score).

Self-contained (torch only): model folders that map with it carry a copy, so Hub remote code works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def max_pooled_embeddings(token_ids: torch.LongTensor, embedding_weight: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Element-wise max over the embedding rows of each row's tokens.

    token_ids: LongTensor [n, L], padded with -1 (any negative id is padding).
    embedding_weight: [vocab, d], any float dtype (the LM's `get_input_embeddings().weight`).
    Returns float32 [n, d] on the weight's device; a row with no real token is all zeros (its
    cosine with anything is 0). Rows are pooled chunk_size at a time; within a chunk only the real
    tokens are gathered (`embedding_bag`), so neither [n, L, d] nor [chunk, L, d] is materialised.
    """
    weight = embedding_weight.detach()
    ids = torch.as_tensor(token_ids).to(device=weight.device, dtype=torch.long)
    if ids.ndim != 2:
        raise ValueError(f"token_ids must be [n, L], got shape {tuple(ids.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    out = torch.zeros(ids.shape[0], weight.shape[1], dtype=torch.float32, device=weight.device)
    with torch.no_grad():
        for start in range(0, ids.shape[0], chunk_size):
            chunk = ids[start : start + chunk_size]
            real = chunk >= 0
            tokens = chunk[real]  # row-major, so each row's tokens are contiguous
            if tokens.numel() == 0:
                continue
            if int(tokens.max()) >= weight.shape[0]:
                raise ValueError(f"token id {int(tokens.max())} is outside the embedding matrix ({weight.shape[0]} rows)")
            counts = real.sum(dim=1)
            # an empty bag (offset == next offset) comes back as zeros, which is what we want
            pooled = F.embedding_bag(tokens, weight, counts.cumsum(0) - counts, mode="max")
            # max only selects values, so pooling in the weight's dtype and casting after is exact
            out[start : start + chunk.shape[0]] = pooled.float()
    return out


def cut_at_stop(sequences: torch.LongTensor, stop_sequences: list[list[int]], pad_token_id: int | None = None) -> torch.LongTensor:
    """Blank everything from the first stop sequence on.

    sequences: LongTensor [n, L], generated tokens only (no prompt).
    stop_sequences: token id lists, e.g. [separator_ids, [eos_token_id]]; the earliest occurrence
        of any of them ends the row's text (the stop tokens themselves are dropped too).
    Returns a copy [n, L] with -1 from the first stop onward and at every pad_token_id position.
    Vectorised over rows: one sliding-window comparison per stop sequence.
    """
    seqs = torch.as_tensor(sequences).long()
    if seqs.ndim != 2:
        raise ValueError(f"sequences must be [n, L], got shape {tuple(seqs.shape)}")
    n, length = seqs.shape
    stop_at = torch.full((n,), length, dtype=torch.long, device=seqs.device)
    for stop in stop_sequences:
        stop = torch.as_tensor(list(stop), dtype=torch.long, device=seqs.device)
        if stop.numel() == 0:
            raise ValueError("a stop sequence must have at least one token")
        if stop.numel() > length:
            continue
        hit = (seqs.unfold(1, stop.numel(), 1) == stop).all(dim=2)  # [n, L - m + 1]: stop starts at j
        # argmax returns the first maximal index, i.e. the first occurrence
        first = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), torch.full_like(stop_at, length))
        stop_at = torch.minimum(stop_at, first)
    cut = seqs.clone()
    cut[torch.arange(length, device=seqs.device)[None, :] >= stop_at[:, None]] = -1
    if pad_token_id is not None:
        cut[seqs == pad_token_id] = -1
    return cut


class CosineItemMapper:
    """Maps generated token sequences to catalog items by cosine similarity of max-pooled input embeddings.

    Args:
        item_token_ids: LongTensor [num_items, L], row i = item i's text tokens, padded with -1,
            WITHOUT separator or eos (they would pull every item towards the same vector).
        embedding_weight: [vocab, d], the LM's input embeddings. Kept by reference to pool the
            generated sequences; the item vectors are a snapshot, so build a new mapper after the
            LM's embeddings change (training), or items and generations are pooled from different
            matrices.
        stop_sequences: token id lists that end a generated text (separator ids, [eos]).
        pad_token_id: generated padding, ignored wherever it appears.
        chunk_size: rows pooled at a time (see `max_pooled_embeddings`).
    Attributes:
        item_vectors: float32 [num_items, d], L2-normalised; an item with no tokens stays zero.
        candidate_items: LongTensor [num_candidates], the lowest item id of each group of items
            with identical vectors, ascending. candidate_vectors [num_candidates, d] are their
            vectors (item_vectors itself when all_distinct); item_candidate [num_items] is each
            item's group; candidate_valid [num_candidates] is False for the zero vector (items
            with no tokens are never returned).
    Ties: `map` takes the first maximal candidate (torch.argmax), i.e. the lowest item id; the order
    of exactly equal cosines between different vectors in `top_items` is torch.topk's.
    """

    def __init__(self, item_token_ids, embedding_weight, stop_sequences, pad_token_id=None, chunk_size=4096):
        self.embedding_weight = embedding_weight.detach()
        self.stop_sequences = [[int(t) for t in stop] for stop in stop_sequences]
        self.pad_token_id = pad_token_id
        self.chunk_size = chunk_size
        vectors = F.normalize(max_pooled_embeddings(item_token_ids, self.embedding_weight, chunk_size), dim=1)
        if vectors.shape[0] == 0:
            raise ValueError("the mapper needs a non-empty [num_items, L] token table")
        self.item_vectors = vectors
        # One column per distinct vector: identical items get bit-identical scores (a GEMM need not
        # give identical columns identical sums), and ordering the groups by their first item makes
        # argmax ties go to the lowest id.
        num_items = vectors.shape[0]
        _, inverse = torch.unique(vectors, dim=0, return_inverse=True)
        ids = torch.arange(num_items, device=vectors.device)
        first = torch.full((int(inverse.max()) + 1,), num_items, device=vectors.device).scatter_reduce(0, inverse, ids, "amin")
        order = first.argsort()
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        self.candidate_items = first[order]
        self.item_candidate = rank[inverse]
        # all distinct (the usual case): candidates are the items, so share the matrix, no copy
        self.all_distinct = order.numel() == num_items
        self.candidate_vectors = vectors if self.all_distinct else vectors[self.candidate_items]
        self.candidate_valid = self.candidate_vectors.ne(0).any(dim=1)

    @property
    def num_items(self) -> int:
        return self.item_vectors.shape[0]

    @property
    def device(self) -> torch.device:
        return self.item_vectors.device

    def to(self, device) -> "CosineItemMapper":
        """Moves everything, the embedding weight included (a copy if it lives on another device)."""
        for name in ("embedding_weight", "item_vectors", "candidate_items", "item_candidate", "candidate_valid"):
            setattr(self, name, getattr(self, name).to(device))
        # shared with item_vectors when all items are distinct: keep one matrix on the new device
        self.candidate_vectors = self.item_vectors if self.all_distinct else self.candidate_vectors.to(device)
        return self

    def sequence_vectors(self, sequences: torch.LongTensor) -> tuple[torch.Tensor, torch.BoolTensor]:
        """Cut and pool generated sequences [n, L]: (L2-normalised float32 [n, d], empty [n])."""
        cut = cut_at_stop(torch.as_tensor(sequences).to(self.device), self.stop_sequences, self.pad_token_id)
        vectors = max_pooled_embeddings(cut, self.embedding_weight, self.chunk_size).to(self.device)
        return F.normalize(vectors, dim=1), ~(cut >= 0).any(dim=1)

    def _candidate_scores(self, sequences) -> torch.Tensor:
        """[n, num_candidates] cosines; -inf for empty sequences and for the no-token candidate."""
        vectors, empty = self.sequence_vectors(sequences)
        scores = vectors @ self.candidate_vectors.T
        return scores.masked_fill_(empty[:, None] | ~self.candidate_valid[None, :], float("-inf"))

    def similarities(self, sequences: torch.LongTensor) -> torch.Tensor:
        """float32 [n, num_items]: cosine of each cut sequence with every item (0 where either is empty)."""
        vectors, _ = self.sequence_vectors(sequences)
        scores = vectors @ self.candidate_vectors.T
        return scores if self.all_distinct else scores.index_select(1, self.item_candidate)

    def map(self, sequences: torch.LongTensor) -> tuple[torch.LongTensor, torch.Tensor]:
        """Top-1 item of each sequence [n, L]: (item_ids [n], cosine [n]).

        A sequence whose cut is empty gets item -1 and cosine -inf.
        """
        scores = self._candidate_scores(sequences)
        best = scores.argmax(dim=1)
        cosine = scores.gather(1, best[:, None]).squeeze(1)
        found = cosine > float("-inf")
        return torch.where(found, self.candidate_items[best], torch.full_like(best, -1)), cosine

    def top_items(self, sequences: torch.LongTensor, k: int) -> tuple[torch.LongTensor, torch.Tensor]:
        """The k items nearest each sequence [n, L], best first: (item_ids [n, k], cosine [n, k]).

        One generated text -> k items (the paper's greedy / sample strategies). Slots past the
        available candidates, and every slot of an empty sequence, are -1 with cosine -inf.
        """
        scores = self._candidate_scores(sequences)
        cosine, best = scores.topk(min(k, scores.shape[1]), dim=1)
        found = cosine > float("-inf")
        item_ids = torch.where(found, self.candidate_items[best], torch.full_like(best, -1))
        if item_ids.shape[1] < k:
            pad = k - item_ids.shape[1]
            item_ids = F.pad(item_ids, (0, pad), value=-1)
            cosine = F.pad(cosine, (0, pad), value=float("-inf"))
        return item_ids, cosine
