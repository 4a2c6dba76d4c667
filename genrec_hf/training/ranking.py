"""Validation ranking metrics inside an unchanged HF `Trainer` (design.md §3 protocol)."""

from __future__ import annotations

import sys

import numpy as np
import torch
from transformers import TrainerCallback

from ..metrics import metrics_from_ranks, target_ranks

VALIDATION_KS = (1, 5, 10, 20)

# TrainingArguments defaults for selecting the best checkpoint on validation ranking quality
# (see parse_selecting_on_validation).
SELECT_ON_VALIDATION = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "ndcg@10",
    "save_total_limit": 1,
    "report_to": "none",
}


def parse_selecting_on_validation(parser, args: list[str] | None = None):
    """`parser.parse_args_into_dataclasses(args)` with SELECT_ON_VALIDATION as the defaults of its
    TrainingArguments, except where the command line says otherwise.

    The defaults are set before parsing, so TrainingArguments.__post_init__ derives
    greater_is_better from the metric (a "loss" the user names is minimised). A strategy or step
    count given for evaluation alone is used for saving too (load_best_model_at_end needs them to
    match), and `--eval_strategy no` turns best-model loading off.
    """
    argv = sys.argv[1:] if args is None else list(args)
    given = vars(parser.parse_known_args(argv)[0])
    named = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    defaults = {key: value for key, value in SELECT_ON_VALIDATION.items() if key not in named}
    for eval_key, save_key in (("eval_strategy", "save_strategy"), ("eval_steps", "save_steps")):
        if eval_key in named and save_key not in named and given[eval_key] not in (None, "no"):
            defaults[save_key] = given[eval_key]
    named_strategies = [given[key] for key in ("eval_strategy", "save_strategy") if key in named]
    if "no" in named_strategies and "load_best_model_at_end" not in named:
        defaults["load_best_model_at_end"] = False
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(argv)


def _labelled_rows(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten [batch, queries, items] logits to the rows that carry a label."""
    if logits.ndim == 2:
        if labels.ndim == 2:  # logits reduced by keep_labelled_logits: the label at the same (first labelled) query
            has_label = labels != -100
            if (has_label.sum(axis=1) > 1).any():
                raise ValueError("validation rows must carry one label each (the validation target)")
            labels = labels[np.arange(len(labels)), has_label.argmax(axis=1)]
        keep = labels != -100
        return logits[keep], labels[keep]
    keep = labels != -100
    return logits[keep], labels[keep]


class RankingMetrics:
    """`compute_metrics` for Trainer: full-catalog HR@k / NDCG@k / MRR with pessimistic ties.

    Every labelled query in the eval set is one user-target pair; build validation sets with one
    label per user (the validation target) so the mean is per user.
    """

    def __init__(self, ks=VALIDATION_KS):
        self.ks = tuple(ks)

    def __call__(self, eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        scores, targets = _labelled_rows(np.asarray(logits), np.asarray(labels))
        ranks = target_ranks(torch.from_numpy(np.ascontiguousarray(scores)), torch.from_numpy(targets.astype(np.int64)))
        return metrics_from_ranks(ranks, self.ks)


def keep_labelled_logits(logits, labels):
    """`preprocess_logits_for_metrics`: keep only logits at labelled queries (saves eval memory).

    Returns [batch, items] when each row has one label (the validation layout), padding rows
    without a label with zeros (their label row is all -100, so metrics skip them).
    """
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.dim() == 2:
        return logits
    has_label = labels != -100
    position = has_label.float().argmax(dim=1)
    picked = logits[torch.arange(logits.shape[0], device=logits.device), position]
    return picked


class RecommenderEvalCallback(TrainerCallback):
    """Adds validation HR/NDCG/MRR of a generative model to the Trainer's eval metrics.

    Generative methods rank by beam search, which Trainer's eval loop (teacher-forced loss)
    does not run; this callback runs the shared evaluator on the validation split whenever
    the Trainer evaluates, and writes `eval_hr@k`, `eval_ndcg@k`, `eval_mrr`, `eval_valid_ratio`
    into the metrics dict it is given, before the Trainer picks the best checkpoint from it, so
    `metric_for_best_model="ndcg@10"` selects on validation ranking quality.
    """

    def __init__(self, processor, split, ks=VALIDATION_KS, batch_size: int = 32, top_k: int | None = None, limit: int | None = None,
                 recommend_kwargs: dict | None = None):
        self.recommend_kwargs = dict(recommend_kwargs or {})  # e.g. LANCER's decode="trie"
        self.processor = processor
        self.split = split
        self.ks = tuple(ks)
        self.batch_size = batch_size
        self.top_k = top_k
        self.limit = limit

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        from ..evaluation import evaluate_recommender
        from ..pipeline import SeqRecPipeline

        if metrics is None or model is None:
            return
        was_training = model.training
        # users sharded over the ranks (not under ZeRO-3 / FSDP: see evaluate_recommender)
        result = evaluate_recommender(
            SeqRecPipeline(model, self.processor, **self.recommend_kwargs), self.split, ks=self.ks, batch_size=self.batch_size,
            top_k=self.top_k, split_name="valid", progress=False, limit=self.limit,
        )
        model.train(was_training)
        ranking = {f"eval_{k}": v for k, v in result.metrics.items()}
        if result.valid_ratio is not None:
            ranking["eval_valid_ratio"] = result.valid_ratio
        metrics.update(ranking)
        state.log_history.append({**ranking, "epoch": state.epoch, "step": state.global_step})
        if state.is_world_process_zero:
            print({k: round(v, 4) for k, v in ranking.items()})
