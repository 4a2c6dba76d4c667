"""Training-time random draws keyed by (seed, key, epoch), not taken from a stream.

A stream's draws depend on everything drawn before, so a run resumed from a checkpoint, or one of
several data-parallel ranks, draws differently from one uninterrupted process. A keyed draw does
not: each key (a dataset row index, a digest of a collator's row) gets its own generator per epoch.
The epoch comes from `set_epoch`, which `EpochDrawsCallback` calls as each of the Trainer's epochs
begins; until then the k-th draw for a key stands for epoch k (each epoch shows every row once).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

from transformers import TrainerCallback


class EpochDraws:
    """`rng(key)`: a generator seeded by (seed, key, epoch)."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.epoch: int | None = None  # once set, the draws follow the epoch instead of the count
        self.draws: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, key) -> random.Random:
        count = self.draws[key]
        self.draws[key] += 1
        return random.Random(f"{self.seed}:{key}:{count if self.epoch is None else self.epoch}")


def row_key(row: dict) -> str:
    """A digest of a raw row's content (lists, strings, numbers, arrays)."""
    text = json.dumps({k: v.tolist() if hasattr(v, "tolist") else v for k, v in row.items()}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class EpochDrawsCallback(TrainerCallback):
    """Gives an `EpochDraws` (a dataset or a collator) the epoch the Trainer is starting.

    The Trainer's own `set_epoch` reaches a dataset in a single process only (accelerate forwards
    it to the sampler instead under torchrun) and never a collator, and draw counts restart in a
    resumed process; the epoch from the Trainer's state is right in every case.
    """

    def __init__(self, drawer: EpochDraws):
        self.drawer = drawer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.drawer.set_epoch(int((state.epoch or 0) + 1e-6))  # epoch e starts at state.epoch == e
