"""ILP-only tuning: cached backbone states vs recomputing them every epoch.

With the backbone frozen (tune_mode="ilp") its states at the query positions never change, so
genrec_hf computes them once and the Trainer fits the ILP on them. This script times both
paths with the same HF Trainer, the same rows and the same number of epochs.

    python benchmarks/bench_st2si_ilp_cache.py --backbone smollm2-135m --users 100 --epochs 5
"""

import argparse
import json
import time

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from genrec_hf import SeqRecProcessor, ST2SIForItemPrediction, load_sequences
from genrec_hf.backbones import load_backbone
from genrec_hf.training import SeqRecCollator, ilp_feature_datasets, sequence_rows


def trainer_seconds(model, dataset, epochs, batch_size, collator=None) -> float:
    args = TrainingArguments(
        output_dir="/tmp/bench_ilp_cache", num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=3e-4, report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), logging_strategy="no",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--max-items", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--text-batch-size", type=int, default=16)
    args = parser.parse_args()

    data = load_sequences("ml-100k")
    backbone, tokenizer = load_backbone(args.backbone, texts=data.catalog.texts())
    processor = SeqRecProcessor(tokenizer, data.catalog, max_items=args.max_items)
    model = ST2SIForItemPrediction.from_backbone(
        backbone, len(data.catalog), processor.query_token_id, vocab_size=len(tokenizer), tune_mode="ilp"
    )
    initial = {k: v.clone() for k, v in model.ilp.state_dict().items()}

    # recompute: the Trainer runs the frozen backbone on the text of every batch, every epoch
    rows = sequence_rows(processor, data.splits["train"]["items"][: args.users])
    text = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    recompute = trainer_seconds(model, text, args.epochs, args.text_batch_size, SeqRecCollator(processor))

    # cached: states once, then the Trainer fits the ILP on them (one example per query)
    model.ilp.load_state_dict(initial)
    start = time.perf_counter()
    states, _ = ilp_feature_datasets(model, processor, data, id_alignment=False, limit_users=args.users, windows="last",
                                     batch_size=args.text_batch_size, progress=False)
    extract = time.perf_counter() - start
    fit = trainer_seconds(model, states, args.epochs, 256)
    result = {
        "backbone": args.backbone, "users": args.users, "rows": len(rows), "examples": len(states),
        "max_items": args.max_items, "epochs": args.epochs,
        "recompute_s": round(recompute, 2), "cached_extract_s": round(extract, 2), "cached_fit_s": round(fit, 2),
        "speedup_total": round(recompute / (extract + fit), 2),
        "speedup_per_epoch_after_extraction": round((recompute / args.epochs) / (fit / args.epochs), 1),
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
