"""Cross-entropy over labelled positions, normalised the way HF's Trainer expects.

A model whose forward takes **kwargs is handed `num_items_in_batch` by the Trainer: the number of
labels in the whole accumulated batch, summed over every data-parallel rank. The Trainer then
neither divides the loss by the gradient-accumulation steps nor corrects for DDP's averaging over
ranks (it multiplies by their number), so a loss that ignores the count trains with gradients
accumulation-steps x ranks too large. Dividing the summed loss by the count gives the one-batch
mean whatever the split.

Self-contained (torch only): each model folder holds a symlink to this file (Hub remote code).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy of logits [..., classes] against labels [...] (-100 = ignore): the mean over
    labelled positions, or their sum / `num_items_in_batch` when the Trainer gives it."""
    labels = labels.to(logits.device)
    labelled = labels != -100  # only labelled rows are cast to float32 (a vocabulary-wide head is large)
    total = F.cross_entropy(logits[labelled].float(), labels[labelled], reduction="sum")
    count = labelled.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device, dtype=total.dtype).clamp(min=1)
