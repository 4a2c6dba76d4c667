"""RecSysGLM (RecSysLLM) with a plain HF Trainer: blank-infilling pretraining, then next-item fine-tuning.

    python examples/train_recsys_glm.py --dataset ml-100k --backbone glm-small --output_dir runs/recsys_glm \\
        --pretrain_epochs 8 --num_train_epochs 50 --eval_users 200
    python examples/train_recsys_glm.py --backbone smollm2-135m --lora_r 8 --output_dir runs/recsys_glm_smollm2
    python examples/train_recsys_glm.py --backbone glm-small --tasks rating=1,sequential=1,direct=1 --output_dir runs/rglm_tasks

`--backbone`: glm-tiny / glm-small (the paper's GLM architecture, random init: no pretrained GLM is
available offline), tiny (a random Llama: the rotary kind), smollm2-135m (offline GGUF) or a folder /
Hub id (a Llama-family LM, or a THUDM GLM folder such as glm-large). `--lora_r` defaults to 8 (the
paper) for a pretrained backbone and to 0 (full fine-tuning) for a random-init one: LoRA on random
weights would leave them random.

1. pretraining (`--pretrain_epochs`, default 8, the paper's; 0 skips it): every epoch, each user's
   training sequence gives a long-, medium- or short-term behaviour window with spans blanked out
   by [MASK] (entities), [sMASK] (sentences) or [gMASK] (a suffix) (`RecSysGLMPretrainCollator`);
   no validation, linear decay with 5% warmup;
2. fine-tuning (`--num_train_epochs`, a ceiling with early stopping): the history's text with
   [MASK] where the next item goes, the item generated after [START] (`RecSysGLMNextItemCollator`).
   Each epoch is validated by trie-constrained beam search (`RecommenderEvalCallback`, `--beam_size`
   beams, on `--eval_users` seeded validation users) and the best epoch by validation NDCG@10 is
   kept (`--eval_strategy` / `--metric_for_best_model` override it). With `--tasks family=weight,...`
   the fine-tuning rows mix task families (rating, sequential, direct, explanation, summary) on
   their seen templates (`recsys_glm_task_dataset`, `RecSysGLMMultiTaskCollator`); validation stays
   next-item.

All `TrainingArguments` flags apply to both stages (pretraining takes `--pretrain_epochs` and its
own schedule). LoRA adapters are merged into the weights before saving (`--no_merge_lora` keeps
them; loading then needs peft). Test is evaluated once at the end with top-k = the beams. The
output folder is a full checkpoint: `genrec-hf evaluate DIR` and `genrec-hf recommend DIR --user ID`
work on it.
"""

import copy
import shutil
import sys
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from genrec_hf import SeqRecPipeline, SeqRecProcessor, load_sequences
from genrec_hf.backbones import load_glm_backbone
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.processing import RECSYS_GLM_DEFAULTS
from genrec_hf.cli import _task_weights
from genrec_hf.training import (
    RecommenderEvalCallback,
    RecSysGLMMultiTaskCollator,
    RecSysGLMNextItemCollator,
    RecSysGLMPretrainCollator,
    parse_selecting_on_validation,
    recsys_glm_datasets,
    recsys_glm_task_dataset,
)
from genrec_hf.training.lancer import validation_subset
from genrec_hf.training.recipes import (
    RecSysGLMTrainingConfig,
    _warmup,
    build_recsys_glm,
    early_stopping,
    ranking_summary,
    record_results,
    save_checkpoint,
    selection_record,
    task_vocabulary_texts,
    train_added_token_rows,
)


@dataclass
class DataArguments:
    dataset: str = field(default="ml-100k", metadata={"help": "ml-100k or a path (see genrec_hf.data)"})
    format: str | None = field(default=None, metadata={"help": "ml-100k | recbole | ml-1m | p5 | amazon | csv"})
    item_file: str | None = field(default=None, metadata={"help": "item table / Amazon metadata"})
    k_core: int | None = field(default=None, metadata={"help": "0 disables; default 0 for MovieLens, 5 otherwise"})
    limit_users: int | None = field(default=None, metadata={"help": "smoke runs: first N users"})
    eval_users: int | None = field(default=None, metadata={"help": "validation users per evaluation (a fixed seeded "
                                                                   "subset; beam search is slow on CPU); default all"})


@dataclass
class RecSysGLMArguments:
    backbone: str = field(default="glm-tiny", metadata={"help": "glm-tiny | glm-small | tiny | smollm2-135m | folder | Hub id"})
    lm_layers: int | None = field(default=None, metadata={"help": "keep only the backbone's first N blocks (CPU budget)"})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank; 0 = full fine-tuning; default 8 for a "
                                                               "pretrained backbone, 0 for random init"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    merge_lora: bool = field(default=True, metadata={"help": "merge the adapters into the weights before saving"})
    train_new_tokens: bool = field(default=True, metadata={"help": "with LoRA: train the added special tokens' embedding rows"})
    pretrain_epochs: float = field(default=8.0, metadata={"help": "blank-infilling pretraining epochs (paper: 8); 0 skips it"})
    objective_per: str = field(default="batch", metadata={"help": "pretraining objective drawn per batch (THUDM GLM) | row"})
    finetune_targets: str = field(default="random", metadata={"help": "random target position per user and epoch | last"})
    max_items: int = field(default=20, metadata={"help": "history window in items"})
    max_item_tokens: int = field(default=32, metadata={"help": "tokens per item text"})
    max_length: int = field(default=512, metadata={"help": "tokens of a next-item row (GLM: its position-table rows)"})
    beam_size: int = field(default=20, metadata={"help": "beams for validation, test and the checkpoint"})
    dynamic_positions: bool = field(default=True, metadata={"help": "the paper's trie-driven positions (--no_dynamic_positions: "
                                                                    "the ablation)"})
    early_stopping_patience: int = field(default=5, metadata={"help": "validations without improvement before stopping; 0 = off"})
    tasks: str | None = field(default=None, metadata={"help": "multi-task fine-tuning: family=weight,... (rating, sequential, "
                                                              "direct, explanation, summary); default next-item only"})


def main():
    parser = HfArgumentParser((DataArguments, RecSysGLMArguments, TrainingArguments))
    # the paper's batch 32; a constant LR because early stopping ends fine-tuning
    parser.set_defaults(num_train_epochs=50, per_device_train_batch_size=32, per_device_eval_batch_size=16,
                        lr_scheduler_type="constant")
    data_args, rargs, training_args = parse_selecting_on_validation(parser)  # best checkpoint on validation
    training_args.remove_unused_columns = False  # rows are raw sequences; the collators tokenize
    set_seed(training_args.seed)
    out = training_args.output_dir

    data = load_sequences(data_args.dataset, format=data_args.format, k_core=data_args.k_core, item_file=data_args.item_file)
    print(data.describe())
    weights = _task_weights(rargs.tasks) if rargs.tasks else None  # checked before anything loads
    texts = data.catalog.texts() + [RECSYS_GLM_DEFAULTS["instruction"], RECSYS_GLM_DEFAULTS["separator"]]
    if weights:
        texts += task_vocabulary_texts()
    backbone, tokenizer, pretrained = load_glm_backbone(rargs.backbone, texts=texts, num_layers=rargs.lm_layers,
                                                        max_sequence_length=rargs.max_length)
    resolved = RecSysGLMTrainingConfig(lora_r=rargs.lora_r, learning_rate=None)
    rargs.lora_r = resolved.resolved_lora_r(pretrained)
    if not any(a.split("=")[0] == "--learning_rate" for a in sys.argv[1:]):  # the recipe's default for this backbone
        training_args.learning_rate = resolved.resolved_learning_rate(pretrained)
    own_tokens = len(tokenizer)
    processor = SeqRecProcessor(tokenizer, data.catalog, method="recsys_glm", max_items=rargs.max_items,
                                max_item_tokens=rargs.max_item_tokens, max_length=rargs.max_length,
                                dynamic_positions=rargs.dynamic_positions)
    model = build_recsys_glm(backbone, processor, beam_size=rargs.beam_size)
    new_rows = 0
    if rargs.lora_r:
        model.enable_lora(r=rargs.lora_r, lora_alpha=rargs.lora_alpha)  # the paper's four GLM modules (or Llama's)
        if rargs.train_new_tokens:
            new_rows = train_added_token_rows(model, own_tokens)
    if torch.cuda.is_available():
        model.cuda()

    # 1. blank-infilling pretraining on behaviour windows: a fixed length, no validation
    if rargs.pretrain_epochs > 0:
        pretrain_args = copy.deepcopy(training_args)
        pretrain_args.num_train_epochs = rargs.pretrain_epochs
        pretrain_args.output_dir = f"{out}/trainer_checkpoints-pretrain"
        pretrain_args.eval_strategy = pretrain_args.save_strategy = "no"
        pretrain_args.load_best_model_at_end = False
        pretrain_args.lr_scheduler_type = "linear"
        for key, value in _warmup(0.05).items():
            setattr(pretrain_args, key, value)
        train_ds, _ = recsys_glm_datasets(data, "pretrain", data_args.limit_users)
        Trainer(model=model, args=pretrain_args, train_dataset=train_ds,
                data_collator=RecSysGLMPretrainCollator(processor, seed=training_args.seed, objective_per=rargs.objective_per)).train()
        shutil.rmtree(pretrain_args.output_dir, ignore_errors=True)

    # 2. next-item fine-tuning, validated by beam search on the catalog trie
    train_ds, valid_ds = recsys_glm_datasets(data, "finetune", data_args.limit_users)
    valid_ds = validation_subset(valid_ds, data_args.eval_users, training_args.seed)
    collator = RecSysGLMNextItemCollator(processor, targets=rargs.finetune_targets, seed=training_args.seed)
    if weights:
        train_ds = recsys_glm_task_dataset(data, weights, seed=training_args.seed, limit_users=data_args.limit_users,
                                           max_history=rargs.max_items)
        collator = RecSysGLMMultiTaskCollator(processor, seed=training_args.seed)
    training_args.output_dir = f"{out}/trainer_checkpoints"
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=valid_ds,
        data_collator=collator,
        callbacks=[RecommenderEvalCallback(processor, valid_ds, batch_size=training_args.per_device_eval_batch_size,
                                           top_k=rargs.beam_size),
                   *early_stopping(rargs.early_stopping_patience, training_args)],
    )
    trainer.train()
    selection = selection_record(trainer)  # before the re-evaluation below adds to the log
    valid = trainer.evaluate()
    print("validation:", valid)
    shutil.rmtree(training_args.output_dir, ignore_errors=True)  # the best model is in memory
    model = trainer.model
    if rargs.lora_r and rargs.merge_lora:
        model.merge_lora()  # a plain checkpoint: loads without peft
    save_checkpoint(model, processor, out, info={
        "method": "recsys_glm",
        "dataset": {"source": data_args.dataset, "format": data_args.format, "k_core": data_args.k_core,
                    "item_file": data_args.item_file},
        "dataset_stats": data.stats(),
        "training": {**asdict(data_args), **asdict(rargs), "learning_rate": training_args.learning_rate,
                     "epochs": training_args.num_train_epochs, "batch_size": training_args.per_device_train_batch_size},
        **selection,
        "validation": {**ranking_summary(valid), "users": len(valid_ds)},
        "tuning": {"pretrained_backbone": pretrained, "mode": f"lora r={rargs.lora_r}" if rargs.lora_r else "full fine-tuning",
                   "lora_merged": bool(rargs.lora_r and rargs.merge_lora), "new_token_rows_trained": new_rows},
    })

    test = evaluate_recommender(SeqRecPipeline(model, processor), data.splits["test"], limit=data_args.limit_users,
                                top_k=rargs.beam_size)
    record_results(out, test)
    print(test.format())


if __name__ == "__main__":
    main()
