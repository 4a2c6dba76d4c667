"""Train ST2SI with a plain HF Trainer; every knob is a command-line flag.

    python examples/train_st2si.py --dataset ml-100k --backbone smollm2-135m --tune_mode ilp \\
        --max_items 50 --output_dir runs/st2si --learning_rate 3e-4

All `TrainingArguments` flags work (--per_device_train_batch_size, --gradient_accumulation_steps,
--bf16, --activation_checkpointing/--gradient_checkpointing, ...). Evaluation, checkpoint saving and
best-model selection run on the validation split by default (every epoch, NDCG@10, early stopping
after 5 validations without improvement, at most 50 epochs; any
`--eval_strategy` / `--metric_for_best_model` given overrides it), never on test; test is
evaluated once at the end with the shared evaluator. The output folder is a full checkpoint:
`genrec-hf evaluate DIR` and `genrec-hf recommend DIR --user ID` work on it.
"""

from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from genrec_hf import SeqRecPipeline, SeqRecProcessor, ST2SIForItemPrediction, load_sequences
from genrec_hf.backbones import load_backbone
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.models.st2si.modeling_st2si import backbone_max_positions
from genrec_hf.processing import ST2SI_DEFAULTS
from genrec_hf.training import (
    QueryStateCollator,
    RankingMetrics,
    SeqRecCollator,
    ilp_feature_datasets,
    keep_labelled_logits,
    parse_selecting_on_validation,
    st2si_datasets,
)
from genrec_hf.training.recipes import early_stopping, ranking_summary, record_results, save_checkpoint, selection_record


@dataclass
class DataArguments:
    dataset: str = field(default="ml-100k", metadata={"help": "ml-100k or a path (see genrec_hf.data)"})
    format: str | None = field(default=None, metadata={"help": "ml-100k | recbole | ml-1m | p5 | amazon | csv"})
    item_file: str | None = field(default=None, metadata={"help": "item table / Amazon metadata"})
    k_core: int | None = field(default=None, metadata={"help": "0 disables; default 0 for MovieLens, 5 otherwise"})
    template: str = field(default="title", metadata={"help": "title | title_year_genres | attributes | format string"})
    windows: str = field(default="random", metadata={"help": "training windows per user and epoch: random (the official "
                                                           "code's fresh (start, target) span) | last | all | N (newest N)"})
    limit_users: int | None = field(default=None, metadata={"help": "smoke runs: first N users"})


@dataclass
class ModelArguments:
    backbone: str = field(default="tiny", metadata={"help": "tiny | smollm2-135m | local folder | Hub id"})
    tune_mode: str = field(default="ilp", metadata={"help": "ilp (frozen backbone) | full"})
    max_items: int = field(default=50, metadata={"help": "history window in items (paper: 50)"})
    max_item_tokens: int = field(default=32, metadata={"help": "tokens per item text (paper: 32)"})
    multi_query: bool = field(default=True, metadata={"help": "a [Q] after every item; False = ablation"})
    id_alignment: bool = field(default=True, metadata={"help": "mix in ID-alignment instructions"})
    cache_states: bool = field(default=True, metadata={"help": "ILP mode: compute backbone states once"})
    feature_batch_size: int = field(default=16, metadata={"help": "batch size for computing cached states"})
    early_stopping_patience: int = field(default=5, metadata={"help": "validations without improvement before stopping (paper: 5); 0 = off"})


def main():
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainingArguments))
    # a ceiling: early stopping on validation ends the run, so the LR must not decay along the ceiling
    parser.set_defaults(num_train_epochs=50, lr_scheduler_type="constant")
    data_args, model_args, training_args = parse_selecting_on_validation(parser)  # best checkpoint on validation
    set_seed(training_args.seed)

    data = load_sequences(data_args.dataset, format=data_args.format, k_core=data_args.k_core,
                          item_file=data_args.item_file, template=data_args.template)
    print(data.describe())

    backbone, tokenizer = load_backbone(model_args.backbone, texts=data.catalog.texts() + [ST2SI_DEFAULTS["alignment_instruction"]])
    processor = SeqRecProcessor(tokenizer, data.catalog, method="st2si", max_items=model_args.max_items,
                                max_item_tokens=model_args.max_item_tokens, multi_query=model_args.multi_query,
                                max_length=backbone_max_positions(backbone.config))  # never past the positions
    model = ST2SIForItemPrediction.from_backbone(
        backbone, num_items=len(data.catalog), query_token_id=processor.query_token_id, vocab_size=len(tokenizer),
        tune_mode=model_args.tune_mode, multi_query=model_args.multi_query, id_alignment=model_args.id_alignment,
        max_items=model_args.max_items, max_item_tokens=model_args.max_item_tokens,
    )
    if torch.cuda.is_available():
        model.cuda()

    if model_args.tune_mode == "ilp" and model_args.cache_states:
        train_ds, valid_ds = ilp_feature_datasets(model, processor, data, id_alignment=model_args.id_alignment,
                                                  windows=data_args.windows, batch_size=model_args.feature_batch_size,
                                                  limit_users=data_args.limit_users, seed=training_args.seed)
        extra = {"data_collator": QueryStateCollator()} if data_args.windows == "random" else {}
    else:
        train_ds, valid_ds = st2si_datasets(processor, data, id_alignment=model_args.id_alignment,
                                            windows=data_args.windows, limit_users=data_args.limit_users,
                                            seed=training_args.seed)
        extra = {"data_collator": SeqRecCollator(processor), "preprocess_logits_for_metrics": keep_labelled_logits}

    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=valid_ds,
                      compute_metrics=RankingMetrics(),
                      callbacks=early_stopping(model_args.early_stopping_patience, training_args), **extra)
    trainer.train()
    selection = selection_record(trainer)  # before the re-evaluation below adds to the log
    valid = trainer.evaluate()
    print("validation:", valid)

    save_checkpoint(trainer.model, processor, training_args.output_dir, info={
        "method": "st2si",
        "dataset": {"source": data_args.dataset, "format": data_args.format, "k_core": data_args.k_core,
                    "item_file": data_args.item_file, "template": data_args.template},
        "dataset_stats": data.stats(),
        "training": {**vars(data_args), **vars(model_args), "learning_rate": training_args.learning_rate,
                     "epochs": training_args.num_train_epochs},
        **selection,
        "validation": ranking_summary(valid),
    })
    test = evaluate_recommender(SeqRecPipeline(trainer.model, processor), data.splits["test"], limit=data_args.limit_users)
    record_results(training_args.output_dir, test)
    print(test.format())


if __name__ == "__main__":
    main()
