"""RecSysGLM training data for an unchanged HF `Trainer`: pretraining (blank infilling) and
next-item fine-tuning collators.

Rows are raw (`items` + `user` for a user's training sequence, `history` + `target` for
evaluation), as for LANCER and GenRec; the collator tokenizes them, so every epoch draws new
behaviour windows, objectives and spans. A row may also carry `user_features` (a dict of user
fields), which the text states as entities. Pass `remove_unused_columns=False` in
TrainingArguments. Batches follow the model contract: input_ids, attention_mask,
position_ids [B, 2, S], part_a_length [B], labels, entity_ids (the model drops entity_ids).
"""

from __future__ import annotations

import abc

import numpy as np

from datasets import Dataset

STAGES = ("pretrain", "finetune")
TARGETS = ("last", "random")
BATCH_KEYS = ("input_ids", "position_ids", "part_a_length", "labels", "entity_ids")


def _features(row: dict):
    return row.get("user_features")


class _RecSysGLMCollator(abc.ABC):
    def __init__(self, processor, seed: int = 0):
        self.processor = processor
        self.rng = np.random.default_rng(seed)

    @abc.abstractmethod
    def encode_row(self, row: dict) -> dict:
        """One raw dataset row -> one processor row (the collator's objective)."""

    def encode_evaluation_row(self, row: dict) -> dict:
        # the next-item row: the loss Trainer reports at evaluation is the recommendation task's
        return self.processor.encode(row["history"], int(row["target"]), user=_features(row))

    def __call__(self, features: list[dict]) -> dict:
        rows = [self.encode_row(f) for f in features]
        return dict(self.processor.pad({k: [r[k] for r in rows] for k in BATCH_KEYS}, return_tensors="pt"))


class RecSysGLMPretrainCollator(_RecSysGLMCollator):
    """Pretraining batches (paper "Data Phase" and "Training Phase"): per training row, a long-,
    medium- or short-term behaviour window (the processor's `window_probs`); then an objective
    drawn by `objective_ratios` ([MASK] entity spans, [sMASK] sentences, [gMASK] a suffix), once
    per batch (`objective_per="batch"`, as THUDM GLM does: a [gMASK] row has a short Part A and
    a long Part B, a [MASK] row the reverse, so mixing them in one batch nearly doubles its
    padded width) or per row ("row"). Evaluation rows (`history`, `target`) give the next-item
    row instead. Seeded.

    The training sequence already excludes each user's validation and test items, so no window
    or span ever holds them.
    """

    def __init__(self, processor, seed: int = 0, objective_per: str = "batch"):
        if objective_per not in ("batch", "row"):
            raise ValueError(f"objective_per must be 'batch' or 'row', got {objective_per!r}")
        super().__init__(processor, seed)
        self.objective_per = objective_per
        self._objective: str | None = None

    def encode_row(self, row: dict) -> dict:
        if "target" in row:
            return self.encode_evaluation_row(row)
        items = list(row["items"])
        if not items:
            raise ValueError(f"user {row.get('user')!r}: an empty training sequence cannot make a pretraining row")
        return self.processor.encode_pretraining(items, self.rng, user=_features(row), objective=self._objective)

    def __call__(self, features: list[dict]) -> dict:
        self._objective = self.processor.draw_objective(self.rng) if self.objective_per == "batch" else None
        try:
            return super().__call__(features)
        finally:
            self._objective = None


class RecSysGLMNextItemCollator(_RecSysGLMCollator):
    """Fine-tuning batches: Part A = the history's text + `[MASK]`, Part B = `[START]` + the target
    item, labelled with its tokens and `[END]` (the inference row plus the target).

    Training rows (`items`): the target is the last item ("last") or a random position >= 1
    drawn afresh every epoch ("random": every transition of a long history gets its turn); the
    history is the items before it (the newest `max_items` of them are written). Evaluation rows
    (`history`, `target`) keep their own target.
    """

    def __init__(self, processor, targets: str = "random", seed: int = 0):
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        super().__init__(processor, seed)
        self.targets = targets

    def encode_row(self, row: dict) -> dict:
        if "target" in row:
            return self.encode_evaluation_row(row)
        items = list(row["items"])
        if len(items) < 2:
            raise ValueError(f"user {row.get('user')!r}: a next-item training row needs at least two items")
        cut = len(items) - 1 if self.targets == "last" else int(self.rng.integers(1, len(items)))
        return self.processor.encode(items[:cut], int(items[cut]), user=_features(row))


def recsys_glm_datasets(data, stage: str = "pretrain", limit_users: int | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation) raw rows; fine-tuning skips users with a single training item."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    train, valid = data.train_valid(limit_users)
    min_items = 2 if stage == "finetune" else 1
    return train.filter(lambda row: len(row["items"]) >= min_items), valid


__all__ = ["BATCH_KEYS", "STAGES", "RecSysGLMNextItemCollator", "RecSysGLMPretrainCollator", "recsys_glm_datasets"]
