"""One evaluator for every recommender (design.md §3): batched, per-user averaged, progress bar.

A recommender is anything with either
- `score_items(histories, users) -> FloatTensor [batch, num_items]`: full ranking with
  pessimistic ties (scoring methods, popularity; `full_ranking` may say False to skip it); or
- `rank_items(histories, users, top_k, exclude_history) -> RecommendationOutput`: ranked lists
  (generative methods), whose `num_valid` / `num_generated` give the valid ratio.
`histories` are lists of catalog ids, oldest first; `users` are original user ids.

Under torchrun / accelerate launch the users are sharded over the ranks and the per-user ranks
gathered, so every rank returns exactly the single-process result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .distributed import gather_in_rank_order, shard_bounds, world
from .metrics import DEFAULT_KS, format_metrics, metrics_from_ranks, ranked_list_ranks, target_ranks

REPORT_KS = (1, 5, 10, 20)
# recommend kwargs of generative models that change the ranked lists (recorded with the result)
GENERATION_SETTINGS = ("decode", "strategy", "num_beams", "constrained")


def mask_history(scores: torch.Tensor, histories: Sequence[Sequence[int]], value: float = float("-inf")) -> torch.Tensor:
    """Set the scores of each row's history items to `value` (a copy; `scores` is kept)."""
    scores = scores.clone()
    rows = [r for r, h in enumerate(histories) for _ in h]
    cols = [i for h in histories for i in h]
    if rows:
        scores[torch.tensor(rows), torch.tensor(cols)] = value
    return scores


def _parameters_sharded(recommender) -> bool:
    """DeepSpeed ZeRO-3 or FSDP: every forward pass is a collective over the ranks."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return True
    model = getattr(recommender, "model", recommender)
    try:
        from transformers.integrations.fsdp import is_fsdp_managed_module
    except ImportError:  # pragma: no cover - older transformers
        return False
    return isinstance(model, torch.nn.Module) and is_fsdp_managed_module(model)


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    num_users: int
    split: str
    exclude_history: bool
    valid_ratio: float | None = None  # generative methods: valid beams / generated beams
    settings: dict = field(default_factory=dict)

    def format(self) -> str:
        ranking = (
            f"top-{self.settings['top_k']} lists from generation" if "top_k" in self.settings
            else "full ranking, pessimistic ties"
        )
        if self.settings.get("generation"):  # e.g. LANCER's decode and strategy
            ranking += " (" + ", ".join(f"{k}={v}" for k, v in self.settings["generation"].items()) + ")"
        lines = [
            f"split={self.split} users={self.num_users} {ranking}, "
            f"history items {'excluded' if self.exclude_history else 'not excluded'}"
        ]
        if self.valid_ratio is not None:
            lines[0] += f", valid beams {self.valid_ratio:.4f}"
        lines.append(format_metrics(self.metrics))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "num_users": self.num_users,
            "exclude_history": self.exclude_history,
            "valid_ratio": self.valid_ratio,
            "metrics": dict(self.metrics),
            **({"settings": self.settings} if self.settings else {}),
        }


def evaluate_recommender(
    recommender,
    split,
    ks: Iterable[int] = REPORT_KS,
    batch_size: int = 64,
    exclude_history: bool = False,
    max_history: int | None = None,
    top_k: int | None = None,
    split_name: str = "test",
    progress: bool = True,
    limit: int | None = None,
    shard_users: bool | None = None,
) -> EvaluationResult:
    """Evaluate `recommender` on a split with columns user, history, target.

    Args:
        split: a `datasets.Dataset` (or dict of lists) with user, history, target.
        max_history: truncate histories to their last N items before the recommender sees them.
        top_k: list length for ranked-list recommenders (default max(ks)); items past it are misses.
        limit: evaluate only the first N users (smoke runs; report it).
        shard_users: in a distributed run (an initialised torch.distributed group of N > 1 ranks)
            each rank evaluates a contiguous 1/N of the users and the per-user ranks are gathered,
            so every rank returns the single-process metrics. Default: shard whenever N > 1, except
            under DeepSpeed ZeRO-3 or FSDP, whose forward passes gather parameters collectively:
            there every rank must make the same calls, so every rank evaluates every user.
    """
    ks = tuple(ks) if ks else DEFAULT_KS
    users, histories, targets = split["user"], split["history"], split["target"]
    if limit is not None:
        users, histories, targets = users[:limit], histories[:limit], targets[:limit]
    if not len(targets):
        raise ValueError("the split has no users to evaluate")
    # full ranking where the recommender can score the whole catalog, else its ranked lists
    scoring = getattr(recommender, "full_ranking", hasattr(recommender, "score_items"))
    if not scoring and not hasattr(recommender, "rank_items"):
        raise TypeError(f"{type(recommender).__name__} has neither score_items nor rank_items")
    top_k = top_k or max(ks)
    rank, world_size = world()
    if shard_users is None:
        shard_users = world_size > 1 and not _parameters_sharded(recommender)
    shard_users = shard_users and world_size > 1
    start, stop = shard_bounds(len(targets), rank, world_size) if shard_users else (0, len(targets))
    all_ranks, valid, generated = [torch.empty(0, dtype=torch.float64)], 0, 0  # a rank may get no users
    bar = tqdm(range(start, stop, batch_size), desc=f"evaluate {split_name}", disable=not progress or rank > 0, unit="batch")
    with torch.inference_mode():
        for first in bar:
            end = min(first + batch_size, stop)
            full_hist = [list(h) for h in histories[first:end]]
            batch_hist = [h[-max_history:] for h in full_hist] if max_history is not None else full_hist
            batch_users = list(users[first:end])
            batch_targets = torch.as_tensor(targets[first:end])
            if scoring:
                scores = recommender.score_items(batch_hist, batch_users).cpu()  # ranked in its own dtype
                if exclude_history:
                    scores = mask_history(scores, full_hist)  # everything seen, not only what the model read
                all_ranks.append(target_ranks(scores, batch_targets))
            else:
                out = recommender.rank_items(batch_hist, batch_users, top_k=top_k, exclude_history=exclude_history)
                all_ranks.append(ranked_list_ranks(out.item_ids.cpu(), batch_targets))
                if out.num_generated is not None:
                    valid += int(out.num_valid.sum())
                    generated += int(out.num_generated.sum())
    ranks = torch.cat(all_ranks)
    if shard_users:  # every rank's users, in split order: the single-process ranks and counts
        shards = gather_in_rank_order((ranks, valid, generated))
        ranks = torch.cat([shard[0] for shard in shards])
        valid, generated = sum(shard[1] for shard in shards), sum(shard[2] for shard in shards)
    generation = {} if scoring else {  # how the lists were generated, where the recommender says (SeqRecPipeline)
        k: v for k, v in (getattr(recommender, "recommend_kwargs", None) or {}).items() if k in GENERATION_SETTINGS
    }
    return EvaluationResult(
        metrics=metrics_from_ranks(ranks, ks),
        num_users=len(ranks),
        split=split_name,
        exclude_history=exclude_history,
        valid_ratio=(valid / generated) if generated else None,
        settings={"max_history": max_history, **({"top_k": top_k} if not scoring else {}), **({"limit": limit} if limit else {}),
                  **({"generation": generation} if generation else {})},
    )
