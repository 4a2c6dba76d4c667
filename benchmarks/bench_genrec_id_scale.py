"""GenRec: how the ID tables' initial std and the scale on the added ID embedding (eq. 2) change
validation and test ranking. Settings: 0.02 (= initializer_range, what genrec_hf uses) or 1.0
(PyTorch's nn.Embedding default, what a skipped `_init_weights` leaves), each with scale 1.0
(eq. 2 as written) or 1/sqrt(d_model) (the public GenRec code).

    python benchmarks/bench_genrec_id_scale.py --backbone tiny --epochs 20 --eval-every 2

Each run: `train_genrec` on ml-100k, finetuning only, best epoch on validation NDCG@10 with early
stopping, test evaluated once. Prints one table row per setting.
"""

import argparse
import json
import math
import os
import tempfile
import time

from genrec_hf.backbones import BART_SIZES
from genrec_hf.data import load_sequences
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.pipeline import SeqRecPipeline
from genrec_hf.training.recipes import GenRecTrainingConfig, train_genrec


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny", choices=sorted(BART_SIZES))
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--eval-every", type=float, default=2)
    parser.add_argument("--pretrain-epochs", type=float, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    data = load_sequences("ml-100k")
    root_scale = 1 / math.sqrt(BART_SIZES[args.backbone]["d_model"])
    rows = []
    for init_std in (0.02, 1.0):
        for scale in (1.0, root_scale):
            cfg = GenRecTrainingConfig(
                backbone=args.backbone, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, eval_every=args.eval_every,
                finetune_targets="random", id_init_std=init_std, id_embedding_scale=scale, seed=args.seed, progress=False,
            )
            start = time.time()
            with tempfile.TemporaryDirectory() as folder:
                model, processor, valid = train_genrec(data, os.path.join(folder, "ckpt"), cfg)
                info = json.load(open(os.path.join(folder, "ckpt", "training_info.json")))
            test = evaluate_recommender(SeqRecPipeline(model, processor), data.splits["test"], progress=False)
            row = {"id_init_std": init_std, "id_embedding_scale": round(scale, 4), "best_checkpoint": info["best_checkpoint"],
                   "validations": len(info["validation_history"]), "valid_ndcg@10": valid["eval_ndcg@10"],
                   "valid_hr@10": valid["eval_hr@10"], "test_ndcg@10": test.metrics["ndcg@10"], "test_hr@10": test.metrics["hr@10"],
                   "minutes": (time.time() - start) / 60}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| ID init std | scale | valid NDCG@10 | valid HR@10 | test NDCG@10 | test HR@10 | validations |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['id_init_std']} | {r['id_embedding_scale']} | {r['valid_ndcg@10']:.4f} | {r['valid_hr@10']:.4f} | "
              f"{r['test_ndcg@10']:.4f} | {r['test_hr@10']:.4f} | {r['validations']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
