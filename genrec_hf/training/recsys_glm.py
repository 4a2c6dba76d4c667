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
import math
import re

import numpy as np

from datasets import Dataset

STAGES = ("pretrain", "finetune")
TARGETS = ("last", "random")
BATCH_KEYS = ("input_ids", "position_ids", "part_a_length", "labels", "entity_ids")


def _features(row: dict):
    """A row's user: its feature dict, else its id (written with features when the processor's
    user_table holds it, else adds nothing)."""
    return row.get("user_features") or row.get("user")


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


class RecSysGLMMultiTaskCollator(_RecSysGLMCollator):
    """Multi-task batches (RecSysLLM "Experiments"): each row of `recsys_glm_task_dataset` names its
    family (`task`) and is written with one of that family's **seen** templates, drawn per row
    (held-out templates are never drawn: they are the zero-shot evaluation). Per family:
    rating -> the rating; sequential -> the item at a random position after the items before it;
    direct -> the same cut, asked as yes / no about the true item or a sampled negative (half
    each) or as a choice among the true item and `choice_negatives` sampled ones; explanation
    -> the first sentence of the user's review of the item; summary -> the review's summary.
    Negatives are never items of the user's training sequence. Evaluation rows (`history`,
    `target`) give the next-item row. Seeded."""

    def __init__(self, processor, seed: int = 0, choice_negatives: int = 19):
        super().__init__(processor, seed)
        self.choice_negatives = int(choice_negatives)
        self.seen = {family: processor.template_ids(family, "seen") for family in processor.settings["task_templates"]}

    def _template(self, family: str, has_history: bool = True) -> str:
        """A seen template of the family; without a history (a user's first rating), one that
        shows none."""
        pool = [t for t in self.seen.get(family, [])
                if has_history or "{history}" not in self.processor.template(t)[1]["prompt"]]
        if not pool:
            raise ValueError(f"no seen {family} template to train with" + ("" if has_history else " on a row without history"))
        return pool[int(self.rng.integers(len(pool)))]

    def encode_row(self, row: dict) -> dict:
        if "target" in row:
            return self.encode_evaluation_row(row)
        family, p = row["task"], self.processor
        items, user = [int(i) for i in row["items"]], row.get("user")
        tid = self._template(family, has_history=bool(items))
        if family in ("sequential", "direct"):
            if len(items) < 2:
                raise ValueError(f"user {user!r}: a {family} training row needs at least two items")
            cut = int(self.rng.integers(1, len(items)))
            history, target = items[:cut], items[cut]
            if family == "sequential":
                return p.encode_task(tid, user=user, history=history, answer=target)
            if p.template(tid)[1]["answer"] == "yes_no":
                if self.rng.random() < 0.5:
                    return p.encode_task(tid, user=user, history=history, item=target, answer=True)
                negative = p.sample_candidates(target, items, 1, self.rng)
                negative = [c for c in negative if c != target][0]
                return p.encode_task(tid, user=user, history=history, item=negative, answer=False)
            pool = p.sample_candidates(target, items, self.choice_negatives, self.rng)
            return p.encode_task(tid, user=user, history=history, candidates=pool, answer=target)
        item = int(row["item"])
        if family == "rating":
            return p.encode_task(tid, user=user, history=items, item=item, answer=row["rating"])
        if family == "explanation":
            return p.encode_task(tid, user=user, history=items, item=item, answer=explanation_target(row["review"]))
        return p.encode_task(tid, user=user, history=items, item=item, review=row["review"], answer=row["summary"])


def explanation_target(review: str) -> str:
    """The explanation a review gives: its first sentence (the whole review when it has no
    sentence end). P5 takes the sentence holding an extracted feature word; no feature extractor
    ships here, so the first sentence stands in for it."""
    text = " ".join(str(review).split())
    first = re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0]
    return first or text


FAMILY_NEEDS = {"rating": "rating", "explanation": "review", "summary": "summary"}


def recsys_glm_task_dataset(data, weights: dict, rows_per_epoch: int | None = None, seed: int = 0,
                            limit_users: int | None = None, max_history: int | None = 50) -> Dataset:
    """Training rows of several task families mixed by `weights` ({family: weight}, normalised):
    `rows_per_epoch` rows (default: users x families with weight > 0), each family's share drawn
    (seeded; with replacement where its pool is smaller) from its pool: sequential and direct from
    the users' training sequences, rating / explanation / summary from the training interactions
    of `data.feedback_splits()` that carry a rating / review / summary. Columns: task, user, items
    (the sequence, or the history before the item), item (-1 for sequence rows), rating, review,
    summary; a rating / review row's history holds its newest `max_history` items (the processor
    writes no more than its max_items). The collator (RecSysGLMMultiTaskCollator) picks templates
    and targets per epoch."""
    from genrec_hf.models.recsys_glm.task_prompts import FAMILIES

    unknown = set(weights) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown task famil(ies) {sorted(unknown)}; known: {list(FAMILIES)}")
    if any(float(w) < 0 for w in weights.values()) or not any(float(w) > 0 for w in weights.values()):
        raise ValueError(f"task weights must be >= 0 with at least one > 0, got {dict(weights)}")
    active = {f: float(w) for f, w in weights.items() if float(w) > 0}
    train, _ = data.train_valid(limit_users)
    users = set(train["user"])
    pools: dict[str, dict[str, list]] = {}
    feedback = None
    for family in active:
        if family in ("sequential", "direct"):
            rows = [r for r in train if len(r["items"]) >= 2]
            pools[family] = {"user": [r["user"] for r in rows], "items": [r["items"] for r in rows],
                             "item": [-1] * len(rows), "rating": [math.nan] * len(rows), "review": [""] * len(rows),
                             "summary": [""] * len(rows)}
            continue
        if feedback is None:
            feedback = data.feedback_splits(max_history)["train"]  # raises when the source has no ratings / reviews
        need = FAMILY_NEEDS[family]
        keep = [i for i, (u, v) in enumerate(zip(feedback["user"], feedback[need]))
                if u in users and (not math.isnan(v) if need == "rating" else bool(v.strip()))]
        if not keep:
            raise ValueError(f"the {family} task needs training interactions with a {need}; {data.name} has none")
        rows = feedback.select(keep)
        pools[family] = {"user": rows["user"], "items": rows["history"], "item": rows["item"], "rating": rows["rating"],
                         "review": rows["review"], "summary": rows["summary"]}
    total = rows_per_epoch or len(users) * len(active)
    norm = sum(active.values())
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("task", "user", "items", "item", "rating", "review", "summary")}
    for family, weight in active.items():
        pool = pools[family]
        size = len(pool["user"])
        count = max(1, round(total * weight / norm))
        picks = rng.choice(size, size=count, replace=count > size)
        out["task"] += [family] * count
        for key in pool:
            out[key] += [pool[key][int(i)] for i in picks]
    order = rng.permutation(len(out["task"]))
    return Dataset.from_dict({k: [v[int(i)] for i in order] for k, v in out.items()})


def recsys_glm_datasets(data, stage: str = "pretrain", limit_users: int | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation) raw rows; fine-tuning skips users with a single training item."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    train, valid = data.train_valid(limit_users)
    min_items = 2 if stage == "finetune" else 1
    return train.filter(lambda row: len(row["items"]) >= min_items), valid


__all__ = ["BATCH_KEYS", "STAGES", "RecSysGLMMultiTaskCollator", "RecSysGLMNextItemCollator", "RecSysGLMPretrainCollator",
           "explanation_target", "recsys_glm_datasets", "recsys_glm_task_dataset"]
