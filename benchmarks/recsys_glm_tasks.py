"""RecSysGLM as one multi-task recommender on MovieLens-100k (issue 11): train one checkpoint on
several task families, then evaluate each family on its seen and held-out templates beside the
baselines on the same rows.

    python benchmarks/recsys_glm_tasks.py --output-dir runs/rglm-tasks --backbone glm-small \
        --tasks rating=1,sequential=1,direct=1 --pretrain-epochs 2 --epochs 15 --eval-users 100
    python benchmarks/recsys_glm_tasks.py --output-dir runs/rglm-tasks --skip-train --test-users 200 --direct-users 100

- rating: RMSE / MAE of the expected rating on each test user's held-out (last) rating, beside
  the global mean and the user's mean of the training ratings.
- sequential: HR / NDCG / MRR under the shared full-ranking protocol (trie-constrained beams over
  the whole catalog), beside popularity.
- direct: a **sampled** protocol, labelled so: per test user the target and `--negatives` (99)
  seeded unseen negatives for yes / no templates, `--choice-negatives` (19) for choice templates
  (100 titles do not fit a 512-position prompt); HR@{1,5,10}, NDCG@{5,10} over the candidates
  with pessimistic ties, beside popularity on the same candidates.
Explanation and summary need review text (Amazon sources); ml-100k has none, so they are not
run here. Writes `<output-dir>/tasks_benchmark.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch


class TemplateRecommender:
    """rank_items over a sequential template, for the shared evaluator."""

    def __init__(self, tasks, template_id: str):
        self.tasks, self.template_id = tasks, template_id

    def rank_items(self, histories, users=None, top_k: int = 20, exclude_history: bool = False):
        return self.tasks.recommend(users, histories, top_k=top_k, template_id=self.template_id,
                                    exclude_history=exclude_history)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--backbone", default="glm-small")
    parser.add_argument("--tasks", default="rating=1,sequential=1,direct=1")
    parser.add_argument("--task-rows-per-epoch", type=int, default=None, help="default: users x families")
    parser.add_argument("--user-features", default=None, help="e.g. age,gender,occupation (ml-100k's user table)")
    parser.add_argument("--pretrain-epochs", type=float, default=2.0)
    parser.add_argument("--epochs", type=float, default=15.0)
    parser.add_argument("--eval-users", type=int, default=100)
    parser.add_argument("--beam-size", type=int, default=20)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--test-users", type=int, default=None, help="first N test users for rating and sequential")
    parser.add_argument("--direct-users", type=int, default=100, help="first N test users for the direct task")
    parser.add_argument("--negatives", type=int, default=99)
    parser.add_argument("--choice-negatives", type=int, default=19)
    parser.add_argument("--families", default="rating,sequential,direct", help="families to evaluate")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit-users", type=int, default=None, help="train on the first N users only (smoke runs)")
    parser.add_argument("--max-steps", type=int, default=-1, help="per stage (smoke runs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from genrec_hf import RecSysGLMForInfilling
    from genrec_hf.baselines import PopularityRecommender
    from genrec_hf.cli import _task_weights
    from genrec_hf.data import load_sequences
    from genrec_hf.evaluation import evaluate_recommender
    from genrec_hf.metrics import rank_metrics, rating_errors
    from genrec_hf.models.recsys_glm.processing_recsys_glm import RecSysGLMProcessor
    from genrec_hf.models.recsys_glm.task_prompts import RecSysGLMTasks
    from genrec_hf.training.recipes import RecSysGLMTrainingConfig, read_training_info, train_recsys_glm

    data = load_sequences("ml-100k")
    print(data.describe())
    path = os.path.join(args.output_dir, "tasks_benchmark.json")
    report = json.load(open(path)) if os.path.isfile(path) else {}
    report.update({"dataset": data.stats(), "torch_threads": torch.get_num_threads()})
    if not args.skip_train:
        cfg = RecSysGLMTrainingConfig(backbone=args.backbone, tasks=_task_weights(args.tasks), pretrain_epochs=args.pretrain_epochs,
                                      epochs=args.epochs, eval_users=args.eval_users, beam_size=args.beam_size, seed=args.seed,
                                      limit_users=args.limit_users, max_steps=args.max_steps,
                                      task_rows_per_epoch=args.task_rows_per_epoch,
                                      user_features=args.user_features.split(",") if args.user_features else None)
        start = time.time()
        train_recsys_glm(data, args.output_dir, cfg, overwrite=True, dataset_spec={"source": "ml-100k"})
        info = read_training_info(args.output_dir)
        report.update({"train_seconds": round(time.time() - start, 1), "training": info.get("training"),
                       "validation": info.get("validation")})
    model = RecSysGLMForInfilling.from_pretrained(args.output_dir).eval()
    processor = RecSysGLMProcessor.from_pretrained(args.output_dir)
    tasks = RecSysGLMTasks(model, processor, batch_size=32)
    results = report.setdefault("results", {})

    def save():
        with open(path, "w") as f:
            json.dump(report, f, indent=2)

    families = args.families.split(",")
    test = data.splits["test"]
    popularity = PopularityRecommender.fit(data.splits["train"]["items"], len(data.catalog))  # sequential and direct
    n = min(args.test_users or len(test), len(test))
    if "rating" in families:
        feedback = data.feedback_splits()
        train_r, test_r = feedback["train"], feedback["test"].select(range(n))
        by_user: dict[str, list[float]] = {}
        for u, r in zip(train_r["user"], train_r["rating"]):
            by_user.setdefault(u, []).append(r)
        global_mean = float(np.mean(train_r["rating"]))
        truth = test_r["rating"]
        results["rating/global mean"] = {**rating_errors([global_mean] * n, truth), "rows": n}
        user_mean = [float(np.mean(by_user.get(u, [global_mean]))) for u in test_r["user"]]
        results["rating/user mean"] = {**rating_errors(user_mean, truth), "rows": n}
        for tid in processor.template_ids("rating"):
            start = time.time()
            pred = tasks.predict_rating(test_r["user"], test_r["history"], test_r["item"], template_id=tid)
            split = processor.template(tid)[1]["split"]
            results[f"rating/{tid} ({split})"] = {**rating_errors(pred, truth), "rows": n,
                                                  "seconds": round(time.time() - start, 1)}
            print(tid, results[f"rating/{tid} ({split})"])
            save()
    if "sequential" in families:
        res = evaluate_recommender(popularity, test, split_name="test", limit=n, progress=False)
        results["sequential/popularity"] = {**res.metrics, "users": res.num_users}
        for tid in processor.template_ids("sequential"):
            start = time.time()
            res = evaluate_recommender(TemplateRecommender(tasks, tid), test, top_k=args.beam_size, batch_size=16,
                                       split_name="test", limit=n, progress=False)
            split = processor.template(tid)[1]["split"]
            results[f"sequential/{tid} ({split})"] = {**res.metrics, "valid_ratio": res.valid_ratio, "users": res.num_users,
                                                      "seconds": round(time.time() - start, 1)}
            print(tid, res.format())
            save()
    if "direct" in families:
        m = min(args.direct_users, len(test))
        rows = test.select(range(m))
        for tid in processor.template_ids("direct"):
            t = processor.template(tid)[1]
            negatives = args.negatives if t["answer"] == "yes_no" else args.choice_negatives
            rng = np.random.default_rng(args.seed)  # the same candidates for every template of a size
            cands = [processor.sample_candidates(tg, h, negatives, rng) for tg, h in zip(rows["target"], rows["history"])]
            where = torch.tensor([c.index(tg) for c, tg in zip(cands, rows["target"])])
            protocol = f"sampled: 1 positive + {negatives} negatives"
            key = f"direct/popularity ({protocol})"
            if key not in results:
                results[key] = {**rank_metrics(popularity.counts[torch.tensor(cands)], where, (1, 5, 10)), "users": m}
            start = time.time()
            scores = tasks.rank_candidates(rows["user"], rows["history"], cands, template_id=tid)
            results[f"direct/{tid} ({t['split']}, {t['answer']}; {protocol})"] = {
                **rank_metrics(scores.double(), where, (1, 5, 10)), "users": m, "seconds": round(time.time() - start, 1)}
            print(tid, results[f"direct/{tid} ({t['split']}, {t['answer']}; {protocol})"])
            save()
    save()
    for key, value in results.items():
        shown = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in value.items()}
        print(f"{key}: {shown}")


if __name__ == "__main__":
    main()
