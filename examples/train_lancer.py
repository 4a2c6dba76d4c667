"""LANCER with a plain HF Trainer: knowledge stage, stage 1 (prompts), optional stage 2 (prompts + LM).

    python examples/train_lancer.py --dataset ml-100k --backbone smollm2-135m --output_dir runs/lancer \\
        --knowledge_epochs 3 --num_train_epochs 5 --stage2 lora --stage2_epochs 20 --eval_users 200

`--backbone` is a causal LM: tiny (random, for smoke runs), smollm2-135m (offline GGUF), a folder
or a Hub id (gpt2 in the paper). The stages (paper §3.2-3.3, §4.1):

1. knowledge stage: the knowledge prompt learns the catalog's detail texts (title, year, genres),
   LM frozen, `--knowledge_epochs` epochs (not given by the paper; 0 skips it);
2. stage 1: both prompts on user sequences, LM frozen, `--num_train_epochs` (default 5, the
   public code's) with early stopping;
3. stage 2 (`--stage2 full|lora`): prompts + the LM (the paper: full, 20 epochs), kept only if its
   best validation beats stage 1's.

All `TrainingArguments` flags work and apply to every stage (stage 2 takes `--stage2_epochs` and
`--stage2_learning_rate`; the knowledge stage `--knowledge_epochs`, without validation). Each
sequence stage validates every epoch by generation (`RecommenderEvalCallback`: beam search with
`--beam_size` beams, decoded with `--decode`, on `--eval_users` seeded validation users) and keeps
its best checkpoint by validation NDCG@10 (`--eval_strategy` / `--metric_for_best_model` override
it); item vectors are recomputed every epoch (`LancerItemVectorsCallback`). Test is evaluated once
at the end, with the same decoding and top-k = the beams. The output folder is a full checkpoint:
`genrec-hf evaluate DIR [--decode trie]` and `genrec-hf recommend DIR --user ID` work on it.
"""

import copy
import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from genrec_hf import LancerForSeqRec, SeqRecPipeline, SeqRecProcessor, load_sequences
from genrec_hf.backbones import load_causal_lm
from genrec_hf.distributed import is_main_process
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.processing import LANCER_DEFAULTS
from genrec_hf.training import (
    LancerCollator,
    LancerItemVectorsCallback,
    LancerKnowledgeCollator,
    RecommenderEvalCallback,
    knowledge_dataset,
    lancer_datasets,
    parse_selecting_on_validation,
)
from genrec_hf.training.lancer import validation_subset
from genrec_hf.training.recipes import early_stopping, ranking_summary, record_results, save_checkpoint, selection_record


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
class LancerArguments:
    backbone: str = field(default="tiny", metadata={"help": "tiny | smollm2-135m | causal-LM folder | Hub id (paper: gpt2)"})
    lm_layers: int | None = field(default=None, metadata={"help": "keep only the LM's first N blocks (CPU budget); default all"})
    variant: str = field(default="full", metadata={"help": "full | title | id | bare (Table 3; bare: no prompts, "
                                                           "no instruction, needs --stage2 full or lora)"})
    max_items: int = field(default=10, metadata={"help": "history window N = reasoning-prompt slots (paper: 10)"})
    max_item_tokens: int = field(default=32, metadata={"help": "tokens per item text (paper: 32)"})
    num_knowledge_tokens: int = field(default=20, metadata={"help": "knowledge prompt length (public code: 20)"})
    prompt_hidden_size: int = field(default=512, metadata={"help": "hidden width of the prompt MLPs"})
    instruction: str | None = field(default=None, metadata={"help": f"text before the history (default "
                                                                   f"{LANCER_DEFAULTS['instruction']!r}; '' = none)"})
    separator: str = field(default=" ->", metadata={"help": "text after every item; it ends a generated item"})
    loss_on: str = field(default="items", metadata={"help": "items (every item's tokens, eq. 2) | target (the last item's)"})
    prompt_visibility: str = field(default="all", metadata={"help": "reasoning slots a training token attends: all "
                                                                    "(a plain prefix) | causal (slot j once item j is read)"})
    windows: str = field(default="random", metadata={"help": "training target per user and epoch: random position | last item"})
    knowledge_epochs: float = field(default=3.0, metadata={"help": "knowledge-stage epochs (not in the paper); 0 skips it"})
    stage2: str = field(default="none", metadata={"help": "none | full (the paper) | lora"})
    stage2_epochs: float = field(default=20.0, metadata={"help": "stage 2 epoch ceiling (paper: 20)"})
    stage2_learning_rate: float | None = field(default=None, metadata={"help": "default: --learning_rate"})
    lora_r: int = field(default=8, metadata={"help": "--stage2 lora: rank"})
    lora_alpha: int = field(default=16, metadata={"help": "--stage2 lora: alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "--stage2 lora: dropout"})
    beam_size: int = field(default=10, metadata={"help": "beams for validation, test and the checkpoint (paper: 10)"})
    decode: str = field(default="cosine", metadata={"help": "cosine (the paper's eq. 12) | trie (beams kept on the catalog)"})
    early_stopping_patience: int = field(default=5, metadata={"help": "validations without improvement before a stage stops; 0 = off"})


def better(new, old, greater_is_better) -> bool:
    """Whether stage 2's best validation beats stage 1's (no selection metric: the later stage)."""
    if new is None or old is None:
        return True
    return new > old if greater_is_better in (True, None) else new < old


def main():
    parser = HfArgumentParser((DataArguments, LancerArguments, TrainingArguments))
    # the paper's / public code's settings: batch 16, lr 2e-4, 5 prompt-only epochs; constant LR
    # because early stopping ends a stage (the paper decays linearly over a fixed length)
    parser.set_defaults(num_train_epochs=5, learning_rate=2e-4, per_device_train_batch_size=16,
                        per_device_eval_batch_size=16, lr_scheduler_type="constant")
    data_args, largs, training_args = parse_selecting_on_validation(parser)  # best checkpoint on validation
    training_args.remove_unused_columns = False  # rows are raw sequences; the collators tokenize
    if largs.stage2 not in ("none", "full", "lora"):
        raise SystemExit(f"--stage2 must be none | full | lora, got {largs.stage2!r}")
    prompts = largs.variant != "bare"
    if not prompts and largs.stage2 == "none":
        raise SystemExit("--variant bare has no prompts to tune: give --stage2 full or --stage2 lora")
    set_seed(training_args.seed)
    out = training_args.output_dir

    data = load_sequences(data_args.dataset, format=data_args.format, k_core=data_args.k_core, item_file=data_args.item_file)
    print(data.describe())
    catalog = data.catalog
    instruction = largs.instruction if largs.instruction is not None else LANCER_DEFAULTS["instruction"]
    texts = catalog.texts() + catalog.with_template("title_year_genres").texts() + [instruction, largs.separator]
    lm, tokenizer = load_causal_lm(largs.backbone, texts=texts + [f"item_{i}" for i in range(len(catalog))],
                                   num_layers=largs.lm_layers)
    processor = SeqRecProcessor(
        tokenizer, catalog, method="lancer", variant=largs.variant, max_items=largs.max_items,
        max_item_tokens=largs.max_item_tokens, separator=largs.separator, loss_on=largs.loss_on,
        prompt_visibility=largs.prompt_visibility, seed=training_args.seed,
        **({"instruction": largs.instruction} if largs.instruction is not None else {}),
    )
    model = LancerForSeqRec.from_lm(
        lm, len(catalog), processor.separator_ids, vocab_size=len(tokenizer), history_slots=largs.max_items,
        num_knowledge_tokens=largs.num_knowledge_tokens, prompt_hidden_size=largs.prompt_hidden_size,
        use_knowledge_prompt=prompts, use_reasoning_prompt=prompts, max_item_tokens=largs.max_item_tokens,
        beam_size=largs.beam_size, decode=largs.decode,
    )
    model.set_catalog(processor.item_token_table(), processor.item_detail_table())
    if torch.cuda.is_available():
        model.cuda()

    # knowledge stage: the knowledge prompt on every item's detail text, LM frozen, no validation
    if prompts and largs.knowledge_epochs > 0:
        model.set_stage("knowledge")
        knowledge_args = copy.deepcopy(training_args)
        knowledge_args.num_train_epochs = largs.knowledge_epochs
        knowledge_args.output_dir = f"{out}/trainer_checkpoints-knowledge"
        knowledge_args.eval_strategy = knowledge_args.save_strategy = "no"
        knowledge_args.load_best_model_at_end = False
        Trainer(model=model, args=knowledge_args, train_dataset=knowledge_dataset(len(catalog)),
                data_collator=LancerKnowledgeCollator(processor, largs.max_items)).train()
        shutil.rmtree(knowledge_args.output_dir, ignore_errors=True)

    train_ds, valid_ds = lancer_datasets(data, data_args.limit_users)
    valid_ds = validation_subset(valid_ds, data_args.eval_users, training_args.seed)

    def sequence_stage(model, args):
        trainer = Trainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
            data_collator=LancerCollator(processor, windows=largs.windows, seed=args.seed),
            callbacks=[LancerItemVectorsCallback(),
                       RecommenderEvalCallback(processor, valid_ds, batch_size=args.per_device_eval_batch_size,
                                               top_k=largs.beam_size, recommend_kwargs={"decode": largs.decode}),
                       *early_stopping(largs.early_stopping_patience, args)],
        )
        trainer.train()
        selection = selection_record(trainer)  # before the re-evaluation below adds to the log
        valid = trainer.evaluate()
        print("validation:", valid)
        if trainer.is_world_process_zero():  # under torchrun: one rank removes the work folder
            shutil.rmtree(args.output_dir, ignore_errors=True)  # the best model is in memory
        return trainer.model, selection, valid

    def save(model, selection, valid, stages):
        model.refresh_item_vectors()  # the saved item vectors match the saved weights
        save_checkpoint(model, processor, out, info={
            "method": "lancer",
            "dataset": {"source": data_args.dataset, "format": data_args.format, "k_core": data_args.k_core,
                        "item_file": data_args.item_file},
            "dataset_stats": data.stats(),
            "training": {**asdict(data_args), **asdict(largs), "learning_rate": training_args.learning_rate,
                         "stage1_epochs": training_args.num_train_epochs, "batch_size": training_args.per_device_train_batch_size},
            **selection,
            "validation": {**ranking_summary(valid), "users": len(valid_ds)},
            "stages": stages,
        })

    stages, best = {}, None
    if prompts:  # stage 1: both prompts, LM frozen
        model.set_stage("prompt")
        stage1_args = copy.deepcopy(training_args)
        stage1_args.output_dir = f"{out}/trainer_checkpoints-stage1"
        model, selection, valid = sequence_stage(model, stage1_args)
        stages["stage1"] = {"best_metric": selection["best_metric"]}
        best = selection["best_metric"]
        save(model, selection, valid, stages)
    if largs.stage2 != "none":  # stage 2: prompts + the LM (fully or through LoRA)
        if largs.stage2 == "lora":
            model.enable_lora(r=largs.lora_r, lora_alpha=largs.lora_alpha, lora_dropout=largs.lora_dropout)
        model.set_stage(largs.stage2)
        stage2_args = copy.deepcopy(training_args)
        stage2_args.num_train_epochs = largs.stage2_epochs
        stage2_args.learning_rate = largs.stage2_learning_rate or training_args.learning_rate
        stage2_args.output_dir = f"{out}/trainer_checkpoints-stage2"
        model, selection, valid = sequence_stage(model, stage2_args)
        stages["stage2"] = {"mode": largs.stage2, "best_metric": selection["best_metric"]}
        if not prompts or better(selection["best_metric"], best, training_args.greater_is_better):
            stages["kept"] = "stage2" if prompts else "stage2 (no stage 1)"
            save(model, selection, valid, stages)
        else:  # stage 2 did not beat stage 1 on validation: the stage-1 checkpoint stays
            stages["kept"] = "stage1"
            model = LancerForSeqRec.from_pretrained(out).to(model.device)
            if is_main_process():  # under torchrun: one rank rewrites the file
                info_path = os.path.join(out, "training_info.json")
                with open(info_path, encoding="utf-8") as f:
                    info = json.load(f)
                info["stages"] = stages
                with open(info_path, "w", encoding="utf-8") as f:
                    json.dump(info, f, indent=2, default=str)

    test = evaluate_recommender(SeqRecPipeline(model, processor, decode=largs.decode), data.splits["test"],
                                limit=data_args.limit_users, top_k=largs.beam_size)
    record_results(out, test)
    print(test.format())


if __name__ == "__main__":
    main()
