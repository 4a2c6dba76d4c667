"""LANCER training data and callbacks for an unchanged HF `Trainer` (paper §3.2-3.3, §4.1).

Stages: the knowledge stage (the knowledge prompt learns the catalog's detail texts, LM frozen),
stage 1 (both prompts on user sequences, LM frozen) and stage 2 (prompts + the LM, fully or
through LoRA). Rows are raw (`item` for the knowledge stage; `items` + `user` for sequences,
`history` + `target` for evaluation); collators tokenize them, so every epoch can draw new
windows. Pass `remove_unused_columns=False` in TrainingArguments.
"""

from __future__ import annotations

import random

from datasets import Dataset
from transformers import TrainerCallback

TRAIN_WINDOWS = ("last", "random")


class LancerKnowledgeCollator:
    """Knowledge-stage batches: each item's detail text, LM loss on its tokens, no reasoning
    prompt (all N slots empty, so masked out)."""

    def __init__(self, processor, history_slots: int):
        self.processor = processor
        self.history_slots = history_slots

    def __call__(self, features: list[dict]) -> dict:
        batch = dict(self.processor.knowledge_inputs([int(f["item"]) for f in features]))
        batch["prompt_item_ids"] = batch["input_ids"].new_full((len(features), self.history_slots), -1)
        return batch


class LancerCollator:
    """Sequence batches: `<instruction> t_1 -> ... t_n -> t_{n+1} ->`, labels on the item tokens.

    Training rows (`items`, a user's training sequence, which ends before the validation and test
    targets): the target is the last item ("last": the paper's truncation to the newest items) or
    a random position >= 1, drawn afresh every epoch ("random": every transition of a long history
    gets its turn; not in the paper). The history is the `max_items` items before the target.
    Evaluation rows (`history`, `target`) keep their own target.
    """

    def __init__(self, processor, windows: str = "random", seed: int = 0):
        if windows not in TRAIN_WINDOWS:
            raise ValueError(f"windows must be one of {TRAIN_WINDOWS}, got {windows!r}")
        self.processor = processor
        self.windows = windows
        self.rng = random.Random(seed)

    def encode_row(self, row: dict) -> dict:
        if "target" in row:
            return self.processor.encode(row["history"], int(row["target"]))
        items = list(row["items"])
        if len(items) < 2:
            raise ValueError(f"user {row.get('user')!r}: a LANCER training row needs at least two items")
        cut = len(items) - 1 if self.windows == "last" else self.rng.randrange(1, len(items))
        return self.processor.encode(items[:cut], items[cut])

    def __call__(self, features: list[dict]) -> dict:
        # raw ids index the item token table, where -1 would silently be the last item: refuse bad
        # ids (and empty histories) here, naming the batch row
        self.processor.check_histories([list(f["history"] if "target" in f else f["items"]) for f in features])
        self.processor.check_histories([[f["target"]] for f in features if "target" in f])
        rows = [self.encode_row(f) for f in features]
        keys = [k for k in ("input_ids", "labels", "prompt_item_ids", "prompt_slots_visible") if k in rows[0]]
        return dict(self.processor.pad({k: [r[k] for r in rows] for k in keys}, return_tensors="pt"))


class LancerItemVectorsCallback(TrainerCallback):
    """Recomputes the item vectors h_i (eq. 5) at the start of training and of every epoch: they
    come from the knowledge prompt (and, in full stage 2, the LM), which training changes.
    Within an epoch the reasoning prompt reads the vectors of the epoch's start; `recommend`
    (validation) recomputes them whenever the weights changed, so the vectors saved with a
    checkpoint are those of its weights."""

    def _refresh(self, model) -> None:
        if model is not None and getattr(model, "reasoning_prompt", None) is not None and model.item_vectors_stale():
            model.refresh_item_vectors()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._refresh(model)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if state.epoch:  # epoch 0 is on_train_begin's
            self._refresh(model)


def knowledge_dataset(num_items: int) -> Dataset:
    """One row per catalog item (the knowledge stage's corpus: the catalog's detail texts)."""
    return Dataset.from_dict({"item": list(range(num_items))})


def lancer_datasets(data, limit_users: int | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation) raw rows; users with a single training item cannot make a row."""
    train, valid = data.train_valid(limit_users)
    return train.filter(lambda row: len(row["items"]) >= 2), valid


def validation_subset(valid: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset of validation users (beam search over every user at every epoch is
    the slowest part of a CPU run); None keeps them all. The subset is fixed for the whole run."""
    if limit is None or limit >= len(valid):
        return valid
    return valid.shuffle(seed=seed).select(range(limit))
