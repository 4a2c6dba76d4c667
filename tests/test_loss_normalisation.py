"""Losses honour the Trainer's `num_items_in_batch` (issue 13).

A model whose forward takes **kwargs is handed the label count of the whole accumulated (and
data-parallel) batch, and the Trainer then neither divides by the accumulation steps nor undoes
DDP's averaging. A loss that ignored the count trained with gradients `steps x ranks` too large.
"""

import random

import pytest
import torch
from transformers import Trainer, TrainingArguments

from genrec_hf.models.losses import labelled_cross_entropy


def test_micro_batch_losses_with_the_global_count_add_up_to_the_batch_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 11, generator=g)
    labels = torch.randint(0, 11, (6, 5), generator=g)
    labels[torch.rand(6, 5, generator=g) < 0.4] = -100  # ragged: the halves hold different counts
    count = int((labels != -100).sum())
    whole = labelled_cross_entropy(logits, labels)
    assert whole == pytest.approx(torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1)).item())
    halves = sum(labelled_cross_entropy(logits[i:i + 3], labels[i:i + 3], torch.tensor(count)) for i in (0, 3))
    assert halves == pytest.approx(whole.item(), abs=1e-6)
    assert labelled_cross_entropy(logits, torch.full((6, 5), -100)) == 0  # nothing labelled: 0, not NaN


class Rows(torch.utils.data.Dataset):
    def __init__(self, num_items=20, num_rows=24, seed=0):
        rng = random.Random(seed)
        self.rows = []
        for _ in range(num_rows):
            items = [rng.randrange(num_items) for _ in range(rng.randrange(2, 9))]  # ragged label counts
            self.rows.append({"input_ids": [i + 1 for i in items[:-1]], "labels": items[1:]})

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def pad(rows):
    width = 8  # fixed: SASRec's positions count from the left edge of the padded window
    return {
        "input_ids": torch.tensor([[0] * (width - len(r["input_ids"])) + r["input_ids"] for r in rows]),
        "labels": torch.tensor([[-100] * (width - len(r["labels"])) + r["labels"] for r in rows]),
    }


def trained_weights(tmp_path, batch_size, accumulation):
    from genrec_hf import SASRecConfig, SASRecForSeqRec

    torch.manual_seed(0)
    model = SASRecForSeqRec(SASRecConfig(num_items=20, max_items=10, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=1, intermediate_size=32, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0))
    args = TrainingArguments(str(tmp_path / f"b{batch_size}"), per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, num_train_epochs=2, learning_rate=1e-2,
                             max_grad_norm=0.5, use_cpu=True, report_to="none", save_strategy="no", seed=0,
                             disable_tqdm=True, logging_steps=1000)
    Trainer(model=model, args=args, train_dataset=Rows(), data_collator=pad).train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_gives_the_one_batch_weights(tmp_path):
    # 8 rows at once, or 4 + 4 (and 2 x 4) accumulated: the same steps with the same gradients. The
    # gradient is clipped (max_grad_norm), so a loss that were accumulation-steps x too large would show
    one = trained_weights(tmp_path, 8, 1)
    for batch_size, accumulation in ((4, 2), (2, 4)):
        other = trained_weights(tmp_path, batch_size, accumulation)
        for name in one:
            assert (one[name] - other[name]).abs().max() <= 1e-5, (name, batch_size, accumulation)
