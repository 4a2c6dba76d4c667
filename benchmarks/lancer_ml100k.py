"""LANCER on MovieLens-100k: train once, then evaluate the checkpoint with each decoding mode
and strategy under the shared protocol (full catalog, leave-one-out, validation-selected).

    python benchmarks/lancer_ml100k.py --output-dir runs/lancer-full --backbone smollm2-135m \
        --knowledge-epochs 1 --stage1-epochs 2 --eval-users 100 --learning-rate 1e-3
    python benchmarks/lancer_ml100k.py --output-dir runs/lancer-full --skip-train \
        --test-users 200 --decodes cosine,trie --strategies beam_search,greedy

Writes `<output-dir>/benchmark.json`: the training settings, seconds per phase, and one entry
per (decode, strategy) with HR/NDCG@{5,10}, MRR, the valid ratio, the distinct items over all
lists and the share of listed items already in the user's history (how personalised the lists
are, and how much the model copies its input).
`--test-users N` evaluates the first N test users only (CPU budget); the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


class ListRecorder:
    """Passes rank_items through to a recommender and keeps what it listed (ids >= 0 per user)."""

    def __init__(self, recommender):
        self.recommender, self.lists, self.histories = recommender, [], []

    def rank_items(self, histories, users=None, top_k: int = 20, exclude_history: bool = False):
        out = self.recommender.rank_items(histories, users, top_k=top_k, exclude_history=exclude_history)
        self.lists += [[i for i in row if i >= 0] for row in out.item_ids.tolist()]
        self.histories += [set(h) for h in histories]
        return out

    def summary(self) -> dict:
        listed = sum(len(r) for r in self.lists)
        seen = sum(len([i for i in r if i in h]) for r, h in zip(self.lists, self.histories))
        return {"distinct_items": len({i for r in self.lists for i in r}), "history_share": seen / max(listed, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--init-from", default=None, help="continue a LANCER checkpoint folder (more epochs / stage 2)")
    parser.add_argument("--lm-layers", type=int, default=None, help="keep the LM's first N blocks (CPU budget)")
    parser.add_argument("--variant", default="full", choices=("full", "title", "id", "bare"))
    parser.add_argument("--knowledge-epochs", type=float, default=1.0)
    parser.add_argument("--stage1-epochs", type=float, default=2.0)
    parser.add_argument("--stage2", default="none", choices=("none", "full", "lora"))
    parser.add_argument("--stage2-epochs", type=float, default=1.0)
    parser.add_argument("--loss-on", default=None, choices=("items", "target"))
    parser.add_argument("--prompt-visibility", default=None, choices=("causal", "all"))
    parser.add_argument("--windows", default="random", choices=("random", "last"),
                        help="training target per user and epoch: a random position or the last training item")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--stage2-learning-rate", type=float, default=None, help="stage 2's (default: --learning-rate)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-users", type=int, default=100, help="validation users per evaluation (seeded subset)")
    parser.add_argument("--decode", default="cosine", choices=("cosine", "trie"), help="decoding used for validation")
    parser.add_argument("--skip-train", action="store_true", help="evaluate an existing checkpoint in --output-dir")
    parser.add_argument("--test-users", type=int, default=None, help="evaluate the first N test users only")
    parser.add_argument("--decodes", default="cosine,trie")
    parser.add_argument("--strategies", default="beam_search")
    parser.add_argument("--time-item-vectors", action="store_true", help="time one catalog pass of the item-vector cache")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from genrec_hf.data import load_sequences
    from genrec_hf.evaluation import evaluate_recommender
    from genrec_hf.pipeline import SeqRecPipeline
    from genrec_hf.training.recipes import LancerTrainingConfig, read_training_info, train_lancer

    data = load_sequences("ml-100k")
    print(data.describe())
    path = os.path.join(args.output_dir, "benchmark.json")
    report = json.load(open(path)) if os.path.isfile(path) else {}
    report.update({"dataset": data.stats(), "torch_threads": torch.get_num_threads()})
    if not args.skip_train:
        cfg = LancerTrainingConfig(
            backbone=args.backbone, init_from=args.init_from, lm_layers=args.lm_layers, variant=args.variant, knowledge_epochs=args.knowledge_epochs,
            stage1_epochs=args.stage1_epochs, stage2=args.stage2, stage2_epochs=args.stage2_epochs,
            learning_rate=args.learning_rate, stage2_learning_rate=args.stage2_learning_rate, batch_size=args.batch_size, eval_users=args.eval_users,
            decode=args.decode, seed=args.seed, windows=args.windows, loss_on=args.loss_on, prompt_visibility=args.prompt_visibility,
        )
        start = time.time()
        train_lancer(data, args.output_dir, cfg, overwrite=True, dataset_spec={"source": "ml-100k"})
        report["train_seconds"] = round(time.time() - start, 1)
        report["training"] = read_training_info(args.output_dir).get("training")
        report["stages"] = read_training_info(args.output_dir).get("stages")
        report["validation"] = read_training_info(args.output_dir).get("validation")
    report.setdefault("results", {})
    pipeline = SeqRecPipeline.from_pretrained(args.output_dir)  # loaded once for every setting below
    if args.time_item_vectors:
        start = time.time()
        pipeline.model.refresh_item_vectors()
        report["item_vectors_seconds"] = round(time.time() - start, 1)
        print(f"item vectors of {len(data.catalog)} items: {report['item_vectors_seconds']} s")
    from genrec_hf.baselines import PopularityRecommender

    popularity = PopularityRecommender.fit(data.splits["train"]["items"], len(data.catalog))
    result = evaluate_recommender(popularity, data.splits["test"], split_name="test", limit=args.test_users)
    report["results"]["popularity"] = {**result.metrics, "users": result.num_users, "test_users_limit": args.test_users}
    print("popularity", result.format())
    for decode in args.decodes.split(","):
        for strategy in args.strategies.split(","):
            pipeline.recommend_kwargs.update(decode=decode, strategy=strategy)
            pipeline.model.eval().current_item_vectors()  # recomputed once if the saved ones are stale: not timed below
            start = time.time()
            recorder = ListRecorder(pipeline)
            result = evaluate_recommender(
                recorder, data.splits["test"], top_k=pipeline.model.config.beam_size, batch_size=16,
                split_name="test", limit=args.test_users,
            )
            key = f"{decode}/{strategy}"
            report["results"][key] = {
                **result.metrics, "valid_ratio": result.valid_ratio, "users": result.num_users,
                "test_users_limit": args.test_users, "seconds": round(time.time() - start, 1), **recorder.summary(),
            }
            print(key, result.format(), recorder.summary())
            with open(path, "w") as f:
                json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
