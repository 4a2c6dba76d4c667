"""GenRec with a plain HF Trainer: masked-item pretraining, then finetuning; every knob is a flag.

    python examples/train_genrec.py --dataset ml-100k --backbone bart-small --output_dir runs/genrec \\
        --pretrain_epochs 10 --learning_rate 5e-4

`--backbone` is a BART folder / Hub id (the paper: facebook/bart-base, learning rate 1e-5) or a
random-init size (tiny, bart-small) when no weights are at hand. `TrainingArguments` flags apply
to the finetuning stage (the pretraining stage reuses them with its own epoch count). By default
the best finetuning epoch is chosen on validation NDCG@10 (beam search over the catalog trie;
`--eval_strategy` / `--metric_for_best_model` override it); test is evaluated once at the end.
The output folder is a full checkpoint (`genrec-hf evaluate DIR` works on it).
"""

import copy
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from genrec_hf import SeqRecPipeline, SeqRecProcessor, load_sequences
from genrec_hf.backbones import load_bart
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.models import GenRecForConditionalGeneration
from genrec_hf.training import RecommenderEvalCallback, parse_selecting_on_validation
from genrec_hf.training.genrec import GenRecCollator, genrec_datasets
from genrec_hf.training.recipes import early_stopping, ranking_summary, record_results, save_checkpoint, selection_record


@dataclass
class GenRecArguments:
    dataset: str = field(default="ml-100k", metadata={"help": "ml-100k or a path (P5 sequential_data.txt, ...)"})
    format: str | None = field(default=None, metadata={"help": "ml-100k | recbole | ml-1m | p5 | amazon | csv"})
    k_core: int | None = field(default=None, metadata={"help": "0 disables; default 0 for MovieLens, 5 otherwise"})
    backbone: str = field(default="bart-small", metadata={"help": "tiny | bart-small | BART folder | Hub id"})
    pretrain_epochs: float = field(default=5.0, metadata={"help": "masked-item pretraining epochs; 0 skips it"})
    max_items: int = field(default=50, metadata={"help": "history window in items"})
    max_length: int = field(default=512, metadata={"help": "encoder tokens (paper: 512)"})
    item_text_ids: str = field(default="random", metadata={"help": "random (seeded permutation) | original (may leak)"})
    finetune_targets: str = field(default="last", metadata={"help": "last training item (the paper's target, one step earlier so validation stays unseen) | random cut point per epoch"})
    unknown_user_prob: float = field(default=0.1, metadata={"help": "share of training rows shown as the unknown user (0 = the paper)"})
    beam_size: int = field(default=20, metadata={"help": "beams for recommendation (paper: 20)"})
    early_stopping_patience: int = field(default=5, metadata={"help": "validations without improvement before stopping; 0 = off"})
    id_embedding_scale: float = field(default=1.0, metadata={"help": "factor on the added ID embedding (1.0 = eq. 2)"})
    limit_users: int | None = field(default=None, metadata={"help": "smoke runs: first N users"})


def main():
    parser = HfArgumentParser((GenRecArguments, TrainingArguments))
    # a ceiling: early stopping on validation ends the run, so the LR is constant after the warmup the
    # paper's 25-epoch run had (5%, set below from the finetuning steps unless --warmup_steps is given)
    parser.set_defaults(num_train_epochs=50, lr_scheduler_type="constant_with_warmup")
    gargs, training_args = parse_selecting_on_validation(parser)  # best checkpoint on validation
    training_args.remove_unused_columns = False  # rows are raw sequences; the collators tokenize
    set_seed(training_args.seed)

    data = load_sequences(gargs.dataset, format=gargs.format, k_core=gargs.k_core)
    print(data.describe())
    users = list(data.splits["train"]["user"])
    numbers = range(len(data.catalog)) if gargs.item_text_ids == "random" else data.catalog.original_ids
    texts = [f"item_{n}" for n in numbers] + [f"user_{r}" for r in range(len(users) + 1)] + ["user_unk"]
    bart, tokenizer = load_bart(gargs.backbone, texts=texts)
    processor = SeqRecProcessor(tokenizer, data.catalog, method="genrec", users=users, item_text_ids=gargs.item_text_ids,
                                max_items=gargs.max_items, max_length=gargs.max_length, seed=training_args.seed)
    table = processor.item_token_table()
    model = GenRecForConditionalGeneration.from_bart(bart, processor.num_users, processor.num_items, vocab_size=len(tokenizer),
                                                     max_item_tokens=table.shape[1], beam_size=gargs.beam_size,
                                                     id_embedding_scale=gargs.id_embedding_scale)
    model.set_item_tokens(table)
    if torch.cuda.is_available():
        model.cuda()

    if gargs.pretrain_epochs > 0:  # stage 1: one random item of each training sequence masked
        pretrain_args = copy.deepcopy(training_args)
        pretrain_args.num_train_epochs = gargs.pretrain_epochs
        pretrain_args.output_dir = training_args.output_dir + "-pretrain"
        pretrain_args.eval_strategy = pretrain_args.save_strategy = "no"
        pretrain_args.load_best_model_at_end = False
        pretrain_args.lr_scheduler_type = "linear"  # a fixed length: the usual decay
        train_ds, _ = genrec_datasets(data, "pretrain", gargs.limit_users)
        Trainer(model=model, args=pretrain_args, train_dataset=train_ds,
                data_collator=GenRecCollator(processor, "pretrain", seed=training_args.seed,
                                             unknown_user_prob=gargs.unknown_user_prob)).train()

    # stage 2: [MASK] appended, the last training item as the target; validation ranking each eval
    train_ds, valid_ds = genrec_datasets(data, "finetune", gargs.limit_users)
    if not training_args.warmup_steps:
        steps_per_epoch = -(-len(train_ds) // (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps))
        training_args.warmup_steps = round(0.05 * 25 * steps_per_epoch)
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=valid_ds,
        data_collator=GenRecCollator(processor, "finetune", finetune_targets=gargs.finetune_targets, seed=training_args.seed,
                                     unknown_user_prob=gargs.unknown_user_prob),
        callbacks=[RecommenderEvalCallback(processor, valid_ds, top_k=gargs.beam_size),
                   *early_stopping(gargs.early_stopping_patience, training_args)],
    )
    trainer.train()
    selection = selection_record(trainer)  # before the re-evaluation below adds to the log
    valid = trainer.evaluate()
    print("validation:", valid)
    save_checkpoint(trainer.model, processor, training_args.output_dir, info={
        "method": "genrec",
        "dataset": {"source": gargs.dataset, "format": gargs.format, "k_core": gargs.k_core},
        "dataset_stats": data.stats(),
        "training": {**vars(gargs), "learning_rate": training_args.learning_rate, "epochs": training_args.num_train_epochs},
        **selection,
        "validation": ranking_summary(valid),
    })
    test = evaluate_recommender(SeqRecPipeline(trainer.model, processor), data.splits["test"], limit=gargs.limit_users,
                                top_k=gargs.beam_size)
    record_results(training_args.output_dir, test)
    print(test.format())


if __name__ == "__main__":
    main()
