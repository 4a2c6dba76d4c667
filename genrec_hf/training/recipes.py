"""End-to-end training recipes shared by the CLI and the quickstart: load a backbone, build the
processor and model, train with an unchanged HF `Trainer` (best checkpoint on validation),
save one checkpoint folder (model + processor + card + training info)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace

import torch
import time

from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from ..backbones import BART_SIZES
from ..cards import write_model_card
from ..distributed import barrier, broadcast_from_main, is_main_process
from ..models.saving import INCOMPLETE_MARKER, public_name
from ..processing import RECSYS_GLM_DEFAULTS, ST2SI_DEFAULTS, SeqRecProcessor
from .draws import EpochDraws, EpochDrawsCallback
from .ranking import SELECT_ON_VALIDATION, RankingMetrics, keep_labelled_logits
from .st2si import (LowerStateCollator, QueryStateCollator, SeqRecCollator, check_windows,
                    ilp_feature_datasets, lower_state_datasets, st2si_datasets)

logger = logging.getLogger(__name__)

TRAINING_INFO = "training_info.json"


@dataclass
class ST2SITrainingConfig:
    """Every knob of an ST2SI run (paper defaults where it gives them, appendix A.3)."""

    backbone: str = "tiny"
    tune_mode: str = "ilp"  # "ilp" | "full" | "top_k" (the top `tune_layers` layers + ILP; not in the paper)
    tune_layers: int = 2
    layer_learning_rate: float | None = None  # top_k: the tuned layers' LR (default 5e-5, the paper's full-tuning LR)
    max_items: int = 50
    max_item_tokens: int = 32
    max_length: int | None = None  # input tokens; default: the backbone's position limit
    multi_query: bool = True
    id_alignment: bool = True
    windows: str | int = "random"  # per user and epoch: "random" (the official code's span), "last", "all" or the newest N
    cache_states: bool = True  # ILP mode: backbone states computed once per window and reused
    epochs: float = 50.0  # a ceiling: early stopping ends the run (paper: patience 5 on validation)
    early_stopping_patience: int = 5  # validations without improvement before stopping; 0 = off
    max_train_minutes: float | None = None  # stop after the first validation past this wall time (a leased GPU)
    resume: bool = False  # continue from the newest Trainer checkpoint in output_dir (after a kill)
    max_steps: int = -1
    learning_rate: float | None = None  # paper: 5e-5 full, 3e-4 ILP
    weight_decay: float = 0.0
    batch_size: int | None = None  # default: cached states 256 queries (fixed windows) or 32 windows (random); text 8
    gradient_accumulation_steps: int = 1
    eval_batch_size: int = 16
    seed: int = 42
    limit_users: int | None = None  # smoke runs: train/validate on the first N users only
    progress: bool = True

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 3e-4 if self.tune_mode in ("ilp", "top_k") else 5e-5  # top_k: the ILP's LR (it starts from scratch)


class TimeBudgetCallback(TrainerCallback):
    """Stop training at the first validation after `minutes` of wall time, so that a run on a machine
    held for a fixed time still ends the normal way: best model reloaded, saved and tested."""

    def __init__(self, minutes: float):
        if minutes <= 0:
            raise ValueError(f"max_train_minutes must be > 0, got {minutes}")
        self.seconds = 60.0 * minutes
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_evaluate(self, args, state, control, **kwargs):
        # rank 0's clock decides for every rank: ranks that stopped apart would wait on each other forever
        if broadcast_from_main(self.start is not None and time.monotonic() - self.start >= self.seconds):
            logger.info("time budget of %.1f min reached at epoch %.2f: stopping", self.seconds / 60, state.epoch or 0)
            control.should_training_stop = True


def early_stopping(patience: int, args: TrainingArguments | None = None) -> list:
    """[EarlyStoppingCallback] on the selection metric (validation NDCG@10), or [] for patience 0
    or when `args` selects no best model (nothing to stop on).

    Patience counts validations, not epochs: with `eval_every` > 1 epoch it spans more epochs."""
    if patience < 0:
        raise ValueError(f"early_stopping_patience must be >= 0, got {patience}")
    if args is not None and not (args.load_best_model_at_end and args.metric_for_best_model):
        if patience:
            logger.warning("early stopping is off: it needs load_best_model_at_end and metric_for_best_model")
        return []
    return [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []


def epoch_draws(drawer) -> list:
    """Keyed draws (random windows, GenRec's collator) follow the Trainer's epoch: exact under
    --resume and torchrun."""
    return [EpochDrawsCallback(drawer)] if isinstance(drawer, EpochDraws) else []


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    if os.path.isfile(os.path.join(output_dir, "config.json")) and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a checkpoint; pass overwrite=True (--overwrite) to replace it"
        )


def _warmup(ratio: float) -> dict:
    """Warmup as a fraction of the steps: `warmup_ratio` where TrainingArguments still has it
    (transformers <= 5.2x), else a float `warmup_steps` < 1, which newer releases read as a ratio."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in names else {"warmup_steps": ratio}


def _training_arguments(
    work_dir: str, *, batch_size: int, eval_batch_size: int, learning_rate: float, epochs: float, max_steps: int,
    seed: int, progress: bool, select_on_validation: bool = True, eval_every_steps: int | None = None,
    save_for_resume: bool = False, **extra,
) -> TrainingArguments:
    """Shared Trainer settings: evaluate and save every epoch (or at max_steps, or every
    `eval_every_steps`), keep the best checkpoint by validation NDCG@10, never look at test.
    Without validation (a pretraining stage), `save_for_resume` still saves the newest checkpoint
    on that schedule, for --resume."""
    by_steps = max_steps > 0 or eval_every_steps is not None
    if eval_every_steps is None and max_steps > 0:
        eval_every_steps = max_steps
    schedule = "steps" if by_steps else "epoch"
    strategy = schedule if select_on_validation else "no"
    if save_for_resume and not select_on_validation:
        extra.update(save_strategy=schedule, save_steps=eval_every_steps if by_steps else None)
    return TrainingArguments(
        output_dir=work_dir,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=eval_batch_size,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps,
        eval_strategy=strategy,
        eval_steps=eval_every_steps if by_steps and select_on_validation else None,
        **{"save_strategy": strategy, "save_steps": eval_every_steps if by_steps and select_on_validation else None, **extra},
        load_best_model_at_end=select_on_validation,
        metric_for_best_model=SELECT_ON_VALIDATION["metric_for_best_model"] if select_on_validation else None,
        greater_is_better=True if select_on_validation else None,
        save_total_limit=1,
        logging_steps=10,
        report_to="none",
        seed=seed,
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
    )


def train_st2si(data, output_dir: str, cfg: ST2SITrainingConfig | None = None, overwrite: bool = False, dataset_spec: dict | None = None):
    """Train ST2SI on `data` (a SequenceData) and save the best-on-validation checkpoint.

    Returns (model, processor, validation metrics).
    """
    from ..backbones import load_backbone
    from ..models import ST2SIForItemPrediction
    from ..models.st2si.modeling_st2si import backbone_max_positions

    cfg = cfg or ST2SITrainingConfig()
    _check_output_dir(output_dir, overwrite)
    set_seed(cfg.seed)
    backbone, tokenizer = load_backbone(cfg.backbone, texts=data.catalog.texts() + [ST2SI_DEFAULTS["alignment_instruction"]])
    processor = SeqRecProcessor(
        tokenizer, data.catalog, method="st2si", max_items=cfg.max_items, max_item_tokens=cfg.max_item_tokens,
        multi_query=cfg.multi_query, max_length=cfg.max_length or backbone_max_positions(backbone.config),
    )
    model = ST2SIForItemPrediction.from_backbone(
        backbone, num_items=len(data.catalog), query_token_id=processor.query_token_id, vocab_size=len(tokenizer),
        tune_mode=cfg.tune_mode, tune_layers=cfg.tune_layers, multi_query=cfg.multi_query, id_alignment=cfg.id_alignment,
        max_items=cfg.max_items, max_item_tokens=cfg.max_item_tokens,
    )
    if torch.cuda.is_available():
        model.cuda()
    cached = cfg.tune_mode == "ilp" and cfg.cache_states
    random_windows = check_windows(cfg.windows) == "random"
    optimizers = {}
    if cfg.tune_mode == "top_k":
        # two learning rates, as the paper's two settings: pretrained layers slow, the new ILP fast
        layers = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("ilp.")]
        optimizers["optimizers"] = (torch.optim.AdamW([
            {"params": layers, "lr": cfg.layer_learning_rate or 5e-5},
            {"params": list(model.ilp.parameters()), "lr": cfg.resolved_learning_rate()},
        ], weight_decay=cfg.weight_decay), None)
    if cfg.tune_mode == "top_k" and cfg.cache_states:
        train_ds, valid_ds = lower_state_datasets(
            model, processor, data, id_alignment=cfg.id_alignment, windows=cfg.windows, batch_size=cfg.eval_batch_size,
            limit_users=cfg.limit_users, progress=cfg.progress,
        )
        extra = {"data_collator": LowerStateCollator(processor), "preprocess_logits_for_metrics": keep_labelled_logits}
    elif cached:
        train_ds, valid_ds = ilp_feature_datasets(
            model, processor, data, id_alignment=cfg.id_alignment, windows=cfg.windows,
            batch_size=cfg.eval_batch_size, limit_users=cfg.limit_users, progress=cfg.progress, seed=cfg.seed,
        )
        extra = {"data_collator": QueryStateCollator()} if random_windows else {}
    else:
        train_ds, valid_ds = st2si_datasets(
            processor, data, id_alignment=cfg.id_alignment, windows=cfg.windows, limit_users=cfg.limit_users, seed=cfg.seed,
        )
        extra = {"data_collator": SeqRecCollator(processor), "preprocess_logits_for_metrics": keep_labelled_logits}
    work_dir = os.path.join(output_dir, "trainer_checkpoints")
    # cached fixed windows: one query per example; random windows: one window (up to max_items queries) per example
    default_batch = (32 if random_windows else 256) if cached else 16 if cfg.tune_mode == "top_k" else 8
    args = _training_arguments(
        work_dir, batch_size=cfg.batch_size or default_batch, eval_batch_size=256 if cached else cfg.eval_batch_size,
        learning_rate=cfg.resolved_learning_rate(), epochs=cfg.epochs, max_steps=cfg.max_steps, seed=cfg.seed,
        progress=cfg.progress, weight_decay=cfg.weight_decay, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type="constant",  # the paper gives no schedule; with early stopping the ceiling must not set the LR
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=valid_ds,
        compute_metrics=RankingMetrics(),
        callbacks=early_stopping(cfg.early_stopping_patience) + epoch_draws(train_ds)
        + ([TimeBudgetCallback(cfg.max_train_minutes)] if cfg.max_train_minutes else []),
        **extra,
        **optimizers,
    )
    return _train_and_save(trainer, processor, output_dir, "st2si", data, cfg, dataset_spec)


@dataclass
class GenRecTrainingConfig:
    """Every knob of a GenRec run (paper, §7.1: bart-base, AdamW lr and weight decay 1e-5, 5%
    warmup, 512 input tokens, 20 beams, 25 finetuning epochs)."""

    backbone: str = "tiny"  # tiny | bart-small (random init) | BART folder / Hub id
    pretrain_epochs: float = 5.0  # masked-item pretraining; 0 = the "w/o pretraining" ablation
    epochs: float = 50.0  # finetuning ceiling (paper: 25); early stopping ends the run
    early_stopping_patience: int = 5  # validations without improvement before stopping; 0 = off
    id_embedding_scale: float = 1.0  # factor on the added ID embedding (1.0 = eq. 2; public code: 1/sqrt(d_model))
    pretrain_max_steps: int = -1
    max_steps: int = -1
    learning_rate: float | None = None  # default 1e-5 for pretrained BART, 5e-4 for random init
    weight_decay: float = 1e-5
    warmup_ratio: float = 0.05  # of the paper's run: warmup_ratio x schedule_epochs epochs of finetuning steps
    schedule_epochs: float = 25.0  # the paper's finetuning length, which its 5% warmup refers to
    batch_size: int = 32
    eval_batch_size: int = 32
    max_items: int = 50
    max_length: int = 512
    item_text_ids: str = "random"  # or "original" (the dataset's ids; may leak the target)
    finetune_targets: str = "last"  # "last" (the paper's, one step earlier: see GenRecCollator) or "random" (a random cut point per epoch)
    unknown_user_prob: float = 0.1  # training rows shown as the unknown user (0 = the paper); trains that row
    beam_size: int = 20
    eval_every: float = 1.0  # finetuning epochs between validations (beam search over all users is slow on CPU)
    resume: bool = False  # continue the newest stage with a checkpoint in output_dir (after a kill)
    seed: int = 42
    limit_users: int | None = None
    progress: bool = True

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-4 if self.backbone in BART_SIZES else 1e-5


def train_genrec(data, output_dir: str, cfg: GenRecTrainingConfig | None = None, overwrite: bool = False, dataset_spec: dict | None = None):
    """Pretrain (masked item) then finetune (appended mask) GenRec; save the best-on-validation
    checkpoint. Returns (model, processor, validation metrics)."""
    from ..backbones import load_bart
    from ..models import GenRecForConditionalGeneration
    from .genrec import GenRecCollator, genrec_datasets, genrec_entity_texts
    from .ranking import RecommenderEvalCallback

    cfg = cfg or GenRecTrainingConfig()
    _check_output_dir(output_dir, overwrite)
    set_seed(cfg.seed)
    users = list(data.splits["train"]["user"])
    bart, tokenizer = load_bart(cfg.backbone, texts=genrec_entity_texts(data, cfg.item_text_ids))
    processor = SeqRecProcessor(
        tokenizer, data.catalog, method="genrec", users=users, item_text_ids=cfg.item_text_ids,
        seed=cfg.seed, max_items=cfg.max_items, max_length=cfg.max_length,
    )
    table = processor.item_token_table()
    model = GenRecForConditionalGeneration.from_bart(
        bart, processor.num_users, processor.num_items, vocab_size=len(tokenizer),
        max_item_tokens=table.shape[1], beam_size=cfg.beam_size, id_embedding_scale=cfg.id_embedding_scale,
    )
    model.set_item_tokens(table)
    if torch.cuda.is_available():
        model.cuda()
    work_dir = os.path.join(output_dir, "trainer_checkpoints")
    common = dict(
        batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.resolved_learning_rate(),
        seed=cfg.seed, progress=cfg.progress, weight_decay=cfg.weight_decay,
        remove_unused_columns=False,  # rows are raw sequences; the collator tokenizes them
    )
    # --resume: the newest stage with a complete checkpoint continues; a finetuning checkpoint holds
    # the pretrained weights, so pretraining is then skipped
    finetune_resumes = cfg.resume and _last_complete_checkpoint(work_dir) is not None
    if (cfg.pretrain_epochs > 0 or cfg.pretrain_max_steps > 0) and not finetune_resumes:
        train_ds, _ = genrec_datasets(data, "pretrain", cfg.limit_users)
        args = _training_arguments(work_dir + "-pretrain", epochs=cfg.pretrain_epochs, max_steps=cfg.pretrain_max_steps,
                                   select_on_validation=False, save_for_resume=True, **common,
                                   **_warmup(cfg.warmup_ratio))  # fixed length: linear
        collator = GenRecCollator(processor, "pretrain", seed=cfg.seed, unknown_user_prob=cfg.unknown_user_prob)
        pretrainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                             callbacks=epoch_draws(collator))
        pretrainer.train(resume_from_checkpoint=_resume_checkpoint(pretrainer, cfg))
        if is_main_process():
            shutil.rmtree(work_dir + "-pretrain", ignore_errors=True)
    train_ds, valid_ds = genrec_datasets(data, "finetune", cfg.limit_users)
    every = None
    if cfg.max_steps <= 0 and cfg.eval_every != 1.0:
        every = max(1, round(math.ceil(len(train_ds) / cfg.batch_size) * cfg.eval_every))  # finetuning steps per validation
    # early stopping makes the length an outcome: warm up as the paper's 25-epoch run would, then keep the LR
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    args = _training_arguments(work_dir, epochs=cfg.epochs, max_steps=cfg.max_steps, eval_every_steps=every, **common,
                               lr_scheduler_type="constant_with_warmup",
                               warmup_steps=round(cfg.warmup_ratio * cfg.schedule_epochs * steps_per_epoch))
    collator = GenRecCollator(processor, "finetune", finetune_targets=cfg.finetune_targets, seed=cfg.seed,
                              unknown_user_prob=cfg.unknown_user_prob)
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds, data_collator=collator,
        callbacks=[RecommenderEvalCallback(processor, valid_ds, batch_size=cfg.eval_batch_size, top_k=cfg.beam_size),
                   *early_stopping(cfg.early_stopping_patience), *epoch_draws(collator)],
    )
    return _train_and_save(trainer, processor, output_dir, "genrec", data, cfg, dataset_spec)


@dataclass
class LancerTrainingConfig:
    """Every knob of a LANCER run. Paper / public-code settings where they exist (§4.1, design.md
    §7): history 10, 20 knowledge tokens, batch 16, lr 2e-4, 5 prompt-only epochs then 20 with
    the LM, 10 beams, 32 tokens per item. Not from the paper: the knowledge stage's length, the
    constant LR (early stopping ends a stage; the paper decays linearly) and the random windows."""

    backbone: str = "tiny"  # tiny | smollm2-135m | folder / Hub id (gpt2 in the paper)
    init_from: str | None = None  # a LANCER checkpoint folder to continue (skips the knowledge stage; model settings are its own)
    lm_layers: int | None = None  # keep the LM's first N blocks only (a CPU budget setting; None = all)
    variant: str = "full"  # full | title | id | bare (Table 3)
    max_items: int = 10  # history window N (= reasoning-prompt slots)
    max_item_tokens: int = 32
    num_knowledge_tokens: int = 20
    prompt_hidden_size: int = 512
    instruction: str | None = None  # None: "A user watched sequence of movies:" ("" for bare)
    separator: str = " ->"
    knowledge_epochs: float = 3.0  # the knowledge stage on the catalog's detail texts (not given by the paper)
    stage1_epochs: float = 5.0  # prompts only, LM frozen (public code: 5); early stopping may end it sooner
    stage2: str = "none"  # none | full | lora: prompts + LM (the paper: full, 20 epochs)
    stage2_epochs: float = 20.0
    lora_r: int = 8
    lora_alpha: int = 16
    early_stopping_patience: int = 5  # validations without improvement before a stage stops; 0 = off
    windows: str = "random"  # training target per user and epoch: "random" position or the "last" item
    loss_on: str | None = None  # "items": every item's tokens (eq. 2) | "target": the predicted item's only; None = "items" (or init_from's)
    prompt_visibility: str | None = None  # reasoning slots per training token: "all" | "causal"; None = "all" (or init_from's)
    learning_rate: float = 2e-4
    stage2_learning_rate: float | None = None  # default: learning_rate
    batch_size: int = 16
    eval_batch_size: int = 16
    beam_size: int = 10  # paper: 10 beams, recommendations @5 and @10
    decode: str = "cosine"  # cosine (eq. 12) | trie, for validation, test and the saved checkpoint
    eval_users: int | None = None  # validation users per evaluation (a seeded subset); None = all
    max_steps: int = -1  # per stage (smoke runs)
    seed: int = 42
    limit_users: int | None = None
    progress: bool = True


def _lancer_backbone_texts(catalog, cfg: LancerTrainingConfig) -> list[str]:
    from ..processing import LANCER_DEFAULTS

    texts = catalog.texts() + catalog.with_template("title_year_genres").texts()
    texts += [cfg.instruction or LANCER_DEFAULTS["instruction"], cfg.separator] + [f"item_{i}" for i in range(len(catalog))]
    return texts


def train_lancer(data, output_dir: str, cfg: LancerTrainingConfig | None = None, overwrite: bool = False, dataset_spec: dict | None = None):
    """Knowledge stage, stage 1 (prompts, LM frozen), optional stage 2 (prompts + LM, full or
    LoRA); each sequence stage keeps its best validation checkpoint, and stage 2's replaces stage
    1's only if it is better on validation NDCG@10. Returns (model, processor, validation metrics)."""
    from ..backbones import load_causal_lm
    from ..models import LancerForSeqRec
    from .lancer import LancerCollator, LancerItemVectorsCallback, LancerKnowledgeCollator, knowledge_dataset, lancer_datasets, validation_subset
    from .ranking import RecommenderEvalCallback

    cfg = cfg or LancerTrainingConfig()
    if cfg.stage2 not in ("none", "full", "lora"):
        raise ValueError(f"stage2 must be none | full | lora, got {cfg.stage2!r}")
    prompts = cfg.variant != "bare"
    if not prompts and cfg.stage2 == "none":
        raise ValueError("the bare variant has no prompts to tune: give stage2='full' or 'lora' (the LM alone)")
    if cfg.stage1_epochs <= 0 and cfg.stage2 == "none":
        raise ValueError("stage1_epochs is 0 and stage2 is 'none': there is no sequence stage to train")
    _check_output_dir(output_dir, overwrite)
    set_seed(cfg.seed)
    if cfg.init_from is not None:
        # continue a saved run (more stage-1 epochs, or stage 2 on a stage-1 checkpoint)
        processor = SeqRecProcessor.from_pretrained(cfg.init_from)
        if processor.catalog.original_ids != data.catalog.original_ids:
            raise ValueError(f"catalog mismatch: {cfg.init_from} was trained on another catalog than this dataset's")
        model = LancerForSeqRec.from_pretrained(cfg.init_from)
        prompts = model.config.use_knowledge_prompt
        # training-row settings may change between runs (they shape the loss, not the model)
        choices = {"loss_on": ("items", "target"), "prompt_visibility": ("causal", "all")}
        for key, allowed in choices.items():
            value = getattr(cfg, key)
            if value is not None:
                if value not in allowed:
                    raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
                processor.settings[key] = value
    else:
        lm, tokenizer = load_causal_lm(cfg.backbone, texts=_lancer_backbone_texts(data.catalog, cfg), num_layers=cfg.lm_layers)
        settings = {"instruction": cfg.instruction} if cfg.instruction is not None else {}
        settings.update({k: getattr(cfg, k) for k in ("loss_on", "prompt_visibility") if getattr(cfg, k) is not None})
        processor = SeqRecProcessor(
            tokenizer, data.catalog, method="lancer", variant=cfg.variant, max_items=cfg.max_items,
            max_item_tokens=cfg.max_item_tokens, separator=cfg.separator, seed=cfg.seed, **settings,
        )
        model = LancerForSeqRec.from_lm(
            lm, len(data.catalog), processor.separator_ids, vocab_size=len(tokenizer), history_slots=cfg.max_items,
            num_knowledge_tokens=cfg.num_knowledge_tokens, prompt_hidden_size=cfg.prompt_hidden_size,
            use_knowledge_prompt=prompts, use_reasoning_prompt=prompts, max_item_tokens=cfg.max_item_tokens,
            beam_size=cfg.beam_size, decode=cfg.decode,
        )
        model.set_catalog(processor.item_token_table(), processor.item_detail_table())
    if torch.cuda.is_available():
        model.cuda()
    work_dir = os.path.join(output_dir, "trainer_checkpoints")
    common = dict(batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, seed=cfg.seed, progress=cfg.progress,
                  remove_unused_columns=False, lr_scheduler_type="constant")
    if prompts and cfg.knowledge_epochs > 0 and cfg.init_from is None:
        model.set_stage("knowledge")
        args = _training_arguments(work_dir + "-knowledge", learning_rate=cfg.learning_rate, epochs=cfg.knowledge_epochs,
                                   max_steps=cfg.max_steps, select_on_validation=False, **common)
        Trainer(model=model, args=args, train_dataset=knowledge_dataset(len(data.catalog)),
                data_collator=LancerKnowledgeCollator(processor, cfg.max_items)).train()
        shutil.rmtree(work_dir + "-knowledge", ignore_errors=True)
    train_ds, valid_ds = lancer_datasets(data, cfg.limit_users)
    valid_ds = validation_subset(valid_ds, cfg.eval_users, cfg.seed)

    def sequence_stage(epochs: float, learning_rate: float, directory: str):
        args = _training_arguments(os.path.join(directory, "trainer_checkpoints"), learning_rate=learning_rate,
                                   epochs=epochs, max_steps=cfg.max_steps, **common)
        trainer = Trainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
            data_collator=LancerCollator(processor, windows=cfg.windows, seed=cfg.seed),
            callbacks=[LancerItemVectorsCallback(),
                       RecommenderEvalCallback(processor, valid_ds, batch_size=cfg.eval_batch_size, top_k=cfg.beam_size,
                                               recommend_kwargs={"decode": cfg.decode}),
                       *early_stopping(cfg.early_stopping_patience)],
        )
        return _train_and_save(trainer, processor, directory, "lancer", data, cfg, dataset_spec)

    stages = {}
    valid = None
    if prompts and cfg.stage1_epochs > 0:  # 0: stage 2 straight on an init_from checkpoint
        model.set_stage("prompt")
        model, _, valid = sequence_stage(cfg.stage1_epochs, cfg.learning_rate, output_dir)
        stages["stage1"] = {"ndcg@10": valid.get("eval_ndcg@10")}
    if cfg.stage2 != "none":
        if cfg.stage2 == "lora":
            model.enable_lora(r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
        model.set_stage(cfg.stage2)
        target = output_dir + "-stage2" if valid is not None else output_dir
        model, _, valid2 = sequence_stage(cfg.stage2_epochs, cfg.stage2_learning_rate or cfg.learning_rate, target)
        stages["stage2"] = {"mode": cfg.stage2, "ndcg@10": valid2.get("eval_ndcg@10")}
        if target != output_dir:
            better = valid2.get("eval_ndcg@10", -1.0) > valid.get("eval_ndcg@10", -1.0)
            stages["kept"] = "stage2" if better else "stage1"
            if is_main_process():  # one rank moves the folders
                if better:  # swap by renames: a kill in between leaves both complete folders
                    os.replace(output_dir, output_dir + ".replaced")
                    os.replace(target, output_dir)
                    shutil.rmtree(output_dir + ".replaced")
                else:  # stage 2 did not beat stage 1 on validation: the stage-1 checkpoint stays
                    shutil.rmtree(target, ignore_errors=True)
            barrier()
            if better:
                valid = valid2
            else:
                model = LancerForSeqRec.from_pretrained(output_dir)
        else:
            valid = valid2
    if is_main_process():
        info = read_training_info(output_dir)
        info["stages"] = stages
        _write_info(output_dir, info)
        write_model_card(output_dir)
    barrier()
    return model, processor, valid


@dataclass
class RecSysGLMTrainingConfig:
    """Every knob of a RecSysGLM run. The paper's settings where it gives them (GLM-10B: LoRA rank 8 on
    query_key_value, dense, dense_h_to_4h and dense_4h_to_h, AdamW, batch 32, warmup, 8 pretraining
    epochs). Not from the paper: the next-item fine-tuning stage with early stopping, the learning
    rates (its 1e-5 is for GLM-10B), the default of full fine-tuning for random-init backbones (LoRA
    on random weights leaves them random), 20 beams (design.md §3)."""

    backbone: str = "glm-tiny"  # glm-tiny | glm-small (native GLM, random init) | tiny (random Llama) | smollm2-135m | folder / Hub id
    lm_layers: int | None = None  # keep the backbone's first N blocks only (a CPU budget setting; None = all)
    lora_r: int | None = None  # None: 8 (the paper) for a pretrained backbone, 0 for random init; 0 = full fine-tuning
    lora_alpha: int = 16
    merge_lora: bool = True  # fold the adapters into the weights before saving (the checkpoint loads without peft)
    train_new_tokens: bool = True  # with LoRA: the embedding rows of the added special tokens train too
    pretrain_epochs: float = 8.0  # blank infilling ([MASK] / [sMASK] / [gMASK]) on behaviour windows; 0 skips it
    epochs: float = 50.0  # next-item fine-tuning ceiling; early stopping ends the run
    early_stopping_patience: int = 5  # validations without improvement before stopping; 0 = off
    finetune_targets: str = "random"  # "random" position per user and epoch | the "last" training item
    # None: next-item fine-tuning; {family: weight} (rating, sequential, direct, explanation, summary):
    # multi-task fine-tuning on the families' seen templates (RecSysGLMMultiTaskCollator), one checkpoint
    tasks: dict | None = None
    task_rows_per_epoch: int | None = None  # default: users x families with weight > 0
    choice_negatives: int = 19  # sampled negatives in a training row of a direct "choice" template
    # user fields written before the instruction (the paper's textualised user features), e.g.
    # ["age", "gender", "occupation"] from ml-100k's .user table; None = behaviour only
    user_features: list[str] | None = None
    objective_per: str = "batch"  # pretraining objective drawn per "batch" (THUDM GLM) or per "row"
    learning_rate: float | None = None  # default: 5e-4 random init, 2e-4 LoRA, 5e-5 full fine-tuning of a pretrained LM
    warmup_ratio: float = 0.05  # pretraining (linear decay over its fixed length); fine-tuning is constant
    batch_size: int = 32  # the paper's, per GPU
    eval_batch_size: int = 16
    max_items: int = 20  # history window in items
    max_item_tokens: int = 32
    max_length: int = 512  # tokens of a next-item row (the native GLM's position tables have this many rows)
    beam_size: int = 20  # beams for validation, test and the checkpoint (beams >= top_k)
    dynamic_positions: bool = True  # False: plain GLM positions (the ablation of the paper's Figure 2)
    eval_users: int | None = None  # validation users per evaluation (a seeded subset); None = all
    max_steps: int = -1  # per stage (smoke runs)
    seed: int = 42
    limit_users: int | None = None
    progress: bool = True

    def resolved_lora_r(self, pretrained: bool) -> int:
        return self.lora_r if self.lora_r is not None else (8 if pretrained else 0)

    def resolved_learning_rate(self, pretrained: bool) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        if not pretrained:
            return 5e-4
        return 2e-4 if self.resolved_lora_r(pretrained) else 5e-5


def recsys_glm_user_table(data, fields: list[str] | None) -> dict | None:
    """{user id: {field: value}} of the chosen user fields (None when `fields` is None); a clear
    error when the dataset has no user table or lacks a field."""
    if not fields:
        return None
    if data.user_features is None:
        raise ValueError(f"{data.name} has no user table: user features need one (ml-100k ships ml-100k.user)")
    known = sorted({k for feats in data.user_features.values() for k in feats})
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise ValueError(f"unknown user field(s) {unknown}; {data.name}'s user table has {known}")
    return {u: {f: feats[f] for f in fields if f in feats} for u, feats in data.user_features.items()}


def task_vocabulary_texts() -> list[str]:
    """The shipped task templates' plain words and the short answers, for training a tokenizer,
    repeated so that BPE merges them as the frequent words they are in task rows."""
    import re

    from ..models.recsys_glm.task_prompts import default_templates

    prompts = [t["prompt"] for rows in default_templates().values() for t in rows]
    return ([re.sub(r"\{[a-z_]+\}", " ", p) for p in prompts] + ["yes no 1 2 3 4 5 user_"]) * 100


def build_recsys_glm(backbone, processor, **config):
    """A RecSysGLMForInfilling on a backbone of `backbones.load_glm_backbone`, fitted to the processor:
    vocabulary (with its special tokens), the five token ids, catalog size and item-token table.
    config: further RecSysGLMConfig fields (beam_size, ...)."""
    import copy

    from ..backbones import THUDMGLMWeights
    from ..models import RecSysGLMConfig, RecSysGLMForInfilling
    from ..models.recsys_glm.configuration_recsys_glm import GLMTextConfig

    table = processor.item_token_table()
    vocab = len(processor.tokenizer)
    settings = {
        "num_items": processor.num_items, "max_item_tokens": table.shape[1], "pad_token_id": processor.tokenizer.pad_token_id,
        "dynamic_positions": bool(processor.settings["dynamic_positions"]), **processor.special_token_ids(), **config,
    }
    if isinstance(backbone, GLMTextConfig):  # random init, sized to the vocabulary with the special tokens
        text = copy.deepcopy(backbone)
        text.vocab_size = vocab
        model = RecSysGLMForInfilling(RecSysGLMConfig(text_config=text, **settings))
    elif isinstance(backbone, THUDMGLMWeights):
        heads = {"num_attention_heads": backbone.num_attention_heads} if backbone.num_attention_heads else {}
        model = RecSysGLMForInfilling.from_thudm_glm(backbone.state_dict, **heads, **settings)
        if vocab > model.get_input_embeddings().weight.shape[0]:  # THUDM pads its vocabulary: usually no resize
            model.resize_token_embeddings(vocab)
    else:  # a rotary base model; never shrink an embedding padded beyond the tokenizer
        rows = backbone.get_input_embeddings().weight.shape[0]
        model = RecSysGLMForInfilling.from_backbone(backbone, vocab_size=max(vocab, rows), **settings)
    model.set_catalog(table)
    return model


def train_added_token_rows(model, first_new: int) -> int:
    """Make the embedding rows from `first_new` on (the special tokens the processor added) trainable
    while LoRA freezes the rest: without this, [MASK], [START] and [END] would keep their initial
    rows. The matrix gets gradients and a hook zeroes those of the backbone's own rows, so
    AdamW without weight decay (the recipe's) leaves them exactly as they were. The hooks go into
    `model._frozen_row_hooks`, which `merge_lora` removes. Returns the rows trained."""
    trained = 0
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        if layer is None or layer.weight.shape[0] <= first_new:
            continue
        keep = torch.zeros(layer.weight.shape[0], 1, dtype=layer.weight.dtype)
        keep[first_new:] = 1
        layer.weight.requires_grad_(True)
        model._frozen_row_hooks.append(layer.weight.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device)))
        trained = max(trained, layer.weight.shape[0] - first_new)
    return trained


def train_recsys_glm(data, output_dir: str, cfg: RecSysGLMTrainingConfig | None = None, overwrite: bool = False,
                     dataset_spec: dict | None = None):
    """Blank-infilling pretraining on behaviour windows (RecSysGLMPretrainCollator), then next-item
    fine-tuning (RecSysGLMNextItemCollator) validated by trie-constrained beam search, best checkpoint
    on validation NDCG@10 with early stopping; LoRA adapters merged before saving (merge_lora).
    Returns (model, processor, validation metrics)."""
    from ..backbones import THUDMGLMWeights, load_glm_backbone
    from .lancer import validation_subset
    from .ranking import RecommenderEvalCallback
    from .recsys_glm import (
        TARGETS,
        RecSysGLMMultiTaskCollator,
        RecSysGLMNextItemCollator,
        RecSysGLMPretrainCollator,
        recsys_glm_datasets,
        recsys_glm_task_dataset,
    )

    cfg = cfg or RecSysGLMTrainingConfig()
    if cfg.finetune_targets not in TARGETS:
        raise ValueError(f"finetune_targets must be one of {TARGETS}, got {cfg.finetune_targets!r}")
    if cfg.lora_r is not None and cfg.lora_r < 0:
        raise ValueError(f"lora_r must be >= 0 (0 = full fine-tuning), got {cfg.lora_r}")
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        raise ValueError("epochs must be > 0: the fine-tuning stage is where the checkpoint is selected")
    _check_output_dir(output_dir, overwrite)
    set_seed(cfg.seed)
    texts = data.catalog.texts() + [RECSYS_GLM_DEFAULTS["instruction"], RECSYS_GLM_DEFAULTS["separator"]]
    if cfg.tasks:  # a tokenizer trained here also learns the templates' words and the answers' (else: characters)
        texts += task_vocabulary_texts()
    user_table = recsys_glm_user_table(data, cfg.user_features)
    if user_table:
        texts += [" ".join(f"{k}: {v};" for k, v in fields.items()) for fields in user_table.values()]
    backbone, tokenizer, pretrained = load_glm_backbone(cfg.backbone, texts=texts, num_layers=cfg.lm_layers,
                                                        max_sequence_length=cfg.max_length)
    # what ran is what training_info.json records (None resolved by the backbone)
    cfg = replace(cfg, lora_r=cfg.resolved_lora_r(pretrained), learning_rate=cfg.resolved_learning_rate(pretrained))
    own_tokens = len(tokenizer)
    settings = {}
    if isinstance(backbone, THUDMGLMWeights):
        cfg = replace(cfg, max_length=min(cfg.max_length, backbone.max_sequence_length))  # its position tables
        vocab = tokenizer.get_vocab()
        settings = {key: name for key, name in (("start_token", "<|startofpiece|>"), ("end_token", "<|endofpiece|>"))
                    if name in vocab}  # GLM's own sop / eop, trained with the weights
    processor = SeqRecProcessor(
        tokenizer, data.catalog, method="recsys_glm", max_items=cfg.max_items, max_item_tokens=cfg.max_item_tokens,
        max_length=cfg.max_length, dynamic_positions=cfg.dynamic_positions, user_table=user_table, **settings,
    )
    model = build_recsys_glm(backbone, processor, beam_size=cfg.beam_size)
    new_rows = 0
    if cfg.lora_r:
        model.enable_lora(r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
        if cfg.train_new_tokens:
            new_rows = train_added_token_rows(model, own_tokens)
    if torch.cuda.is_available():
        model.cuda()
    work_dir = os.path.join(output_dir, "trainer_checkpoints")
    common = dict(batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.learning_rate,
                  seed=cfg.seed, progress=cfg.progress, remove_unused_columns=False)  # raw rows; the collators tokenize
    if cfg.pretrain_epochs > 0:
        train_ds, _ = recsys_glm_datasets(data, "pretrain", cfg.limit_users)
        args = _training_arguments(work_dir + "-pretrain", epochs=cfg.pretrain_epochs, max_steps=cfg.max_steps,
                                   select_on_validation=False, **common, **_warmup(cfg.warmup_ratio))  # fixed length: linear
        Trainer(model=model, args=args, train_dataset=train_ds,
                data_collator=RecSysGLMPretrainCollator(processor, seed=cfg.seed, objective_per=cfg.objective_per)).train()
        shutil.rmtree(work_dir + "-pretrain", ignore_errors=True)
    train_ds, valid_ds = recsys_glm_datasets(data, "finetune", cfg.limit_users)
    valid_ds = validation_subset(valid_ds, cfg.eval_users, cfg.seed)
    if cfg.tasks:  # validation stays next-item (sequential-0 is that row), so selection is as for one task
        train_ds = recsys_glm_task_dataset(data, cfg.tasks, cfg.task_rows_per_epoch, cfg.seed, cfg.limit_users,
                                           max_history=cfg.max_items)
        collator = RecSysGLMMultiTaskCollator(processor, seed=cfg.seed, choice_negatives=cfg.choice_negatives)
    else:
        collator = RecSysGLMNextItemCollator(processor, targets=cfg.finetune_targets, seed=cfg.seed)
    args = _training_arguments(work_dir, epochs=cfg.epochs, max_steps=cfg.max_steps, lr_scheduler_type="constant", **common)
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
        data_collator=collator,
        callbacks=[RecommenderEvalCallback(processor, valid_ds, batch_size=cfg.eval_batch_size, top_k=cfg.beam_size),
                   *early_stopping(cfg.early_stopping_patience)],
    )
    merge = bool(cfg.lora_r and cfg.merge_lora)
    tuning = {"pretrained_backbone": pretrained, "mode": f"lora r={cfg.lora_r}" if cfg.lora_r else "full fine-tuning",
              "lora_merged": merge, "new_token_rows_trained": new_rows}
    return _train_and_save(trainer, processor, output_dir, "recsys_glm", data, cfg, dataset_spec,
                           before_save=(lambda m: m.merge_lora()) if merge else None, extra_info={"tuning": tuning})


ITEM_ID_METHODS = ("sasrec", "gru4rec")


@dataclass
class ItemIDTrainingConfig:
    """A SASRec or GRU4Rec run, RecBole's settings where it has them: Adam at lr 1e-3 (AdamW with
    no weight decay), constant LR, cross-entropy over the whole catalog, early stopping after 10
    validations without improvement, a 300-epoch ceiling. The model's own defaults (RecBole's
    SASRec.yaml / GRU4Rec.yaml) are overridden by `model_config`."""

    method: str = "sasrec"
    max_items: int = 50
    model_config: dict | None = None  # SASRecConfig / GRU4RecConfig overrides, e.g. {"hidden_size": 128}
    windows: str | int = "all"  # training rows per user (training/item_ids.py)
    epochs: float = 300.0  # a ceiling: early stopping ends the run
    early_stopping_patience: int = 10
    max_steps: int = -1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64  # windows (each up to max_items labelled positions)
    eval_batch_size: int = 256
    seed: int = 42
    limit_users: int | None = None
    progress: bool = True
    resume: bool = False  # continue from the newest Trainer checkpoint in output_dir (after a kill)

    # the CLI's shared --backbone flag has no meaning for these models; recorded as "none"
    backbone: str = "none"


def train_item_id_model(data, output_dir: str, cfg: ItemIDTrainingConfig | None = None, overwrite: bool = False,
                        dataset_spec: dict | None = None):
    """Train SASRec or GRU4Rec (cfg.method) on `data` and save the best-on-validation checkpoint.

    Returns (model, processor, validation metrics)."""
    from ..models import GRU4RecConfig, GRU4RecForSeqRec, SASRecConfig, SASRecForSeqRec
    from .item_ids import item_id_datasets

    cfg = cfg or ItemIDTrainingConfig()
    if cfg.method not in ITEM_ID_METHODS:
        raise ValueError(f"ItemIDTrainingConfig.method must be one of {ITEM_ID_METHODS}, got {cfg.method!r}")
    _check_output_dir(output_dir, overwrite)
    set_seed(cfg.seed)
    config_class, model_class = {"sasrec": (SASRecConfig, SASRecForSeqRec), "gru4rec": (GRU4RecConfig, GRU4RecForSeqRec)}[cfg.method]
    overrides = dict(cfg.model_config or {})
    for key in ("num_items", "max_items"):
        if key in overrides:
            raise ValueError(f"model_config cannot set {key}: it comes from the catalog / max_items")
    model = model_class(config_class(num_items=len(data.catalog), max_items=cfg.max_items, **overrides))
    processor = SeqRecProcessor(None, data.catalog, method=cfg.method, max_items=cfg.max_items)
    if torch.cuda.is_available():
        model.cuda()
    train_ds, valid_ds = item_id_datasets(processor, data, windows=cfg.windows, limit_users=cfg.limit_users, seed=cfg.seed)
    args = _training_arguments(
        os.path.join(output_dir, "trainer_checkpoints"), batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.learning_rate, epochs=cfg.epochs, max_steps=cfg.max_steps, seed=cfg.seed, progress=cfg.progress,
        weight_decay=cfg.weight_decay, lr_scheduler_type="constant",  # RecBole: Adam, no schedule
        logging_strategy="epoch",
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds, data_collator=SeqRecCollator(processor),
        compute_metrics=RankingMetrics(), preprocess_logits_for_metrics=keep_labelled_logits,
        callbacks=early_stopping(cfg.early_stopping_patience) + epoch_draws(train_ds),
    )
    return _train_and_save(trainer, processor, output_dir, cfg.method, data, cfg, dataset_spec)


def _logged_eval(state, best_checkpoint: str | None) -> dict:
    """The validation metrics logged at the best checkpoint's step (spares one more evaluation,
    which for generative models means beam search over every validation user)."""
    if not best_checkpoint:
        return {}
    step = int(best_checkpoint.rsplit("-", 1)[-1])
    merged = {}
    for entry in state.log_history:
        if entry.get("step") == step and any(k.startswith("eval_") for k in entry):
            merged.update(entry)
    return merged if "eval_ndcg@10" in merged else {}


def ranking_summary(metrics: dict) -> dict:
    """The ranking metrics (hr@k, ndcg@k, mrr, valid_ratio) of a Trainer metrics dict, without the eval_ prefix."""
    return {k.removeprefix("eval_"): v for k, v in metrics.items() if "@" in k or k.endswith(("mrr", "ratio"))}


def selection_record(trainer: Trainer) -> dict:
    """How the Trainer chose its model: the metric, its best value, the checkpoint and every
    validation it logged (for training_info.json, so the choice can be checked afterwards)."""
    def is_metric(key: str) -> bool:
        return key.startswith("eval_") and not key.endswith(("runtime", "per_second"))

    history = [
        {k.removeprefix("eval_"): v for k, v in entry.items() if is_metric(k) or k in ("epoch", "step")}
        for entry in trainer.state.log_history
        if any(is_metric(k) for k in entry)
    ]
    best = trainer.state.best_model_checkpoint
    return {
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": best and os.path.basename(best),
        "validation_history": history,
    }


def _train_and_save(trainer: Trainer, processor, output_dir: str, method: str, data, cfg, dataset_spec,
                    before_save=None, extra_info: dict | None = None):
    """Train, re-evaluate the best (validation) model, save it with its training info, drop the
    Trainer's intermediate checkpoints. `before_save(model)` runs on the selected model before it is
    saved (RecSysGLM: merge LoRA); `extra_info` joins training_info.json. Returns (model, processor,
    validation metrics)."""
    train_output = trainer.train(resume_from_checkpoint=_resume_checkpoint(trainer, cfg))
    model = trainer.model
    best = trainer.state.best_model_checkpoint
    valid_metrics = _logged_eval(trainer.state, best) or trainer.evaluate()
    if before_save is not None:
        before_save(model)
    save_checkpoint(model, processor, output_dir, info={
        "method": method,
        "dataset": dataset_spec or {"source": data.name},
        "dataset_stats": data.stats(),
        "training": {**asdict(cfg), "backbone": public_name(cfg.backbone),  # never a local path (uploaded)
                     **({"init_from": public_name(cfg.init_from)} if getattr(cfg, "init_from", None) else {})},
        **selection_record(trainer),
        # the Trainer's own timing of this stage (data loading and the final test evaluation excluded)
        "train_runtime_s": round(float(train_output.metrics.get("train_runtime", 0.0)), 1),
        "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "validation": {
            **ranking_summary(valid_metrics),
            "users": len(trainer.eval_dataset),
        },
        **(extra_info or {}),
    })
    if is_main_process():
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)  # the best model is saved above
    return model, processor, valid_metrics


def _resume_checkpoint(trainer: Trainer, cfg) -> str | None:
    """The newest epoch checkpoint the Trainer left in its work folder when `cfg.resume` asks for it.
    The Trainer restores weights, optimizer, scheduler, RNG states and the early-stopping counter
    from it, so the run ends where an uninterrupted one would."""
    if not getattr(cfg, "resume", False):
        return None
    work_dir = trainer.args.output_dir
    last = _last_complete_checkpoint(work_dir)
    if last is None:
        logger.warning("--resume: no checkpoint in %s, training from the start", work_dir)
    else:
        logger.warning("resuming from %s", last)
    return last


def _last_complete_checkpoint(work_dir: str) -> str | None:
    """The Trainer writes `trainer_state.json` last into a checkpoint folder and not atomically: a
    run killed while saving leaves a newer folder without it (or with half of it). Take the newest
    folder whose state file reads."""
    if not os.path.isdir(work_dir):
        return None
    folders = sorted((n for n in os.listdir(work_dir) if re.fullmatch(r"checkpoint-\d+", n)),
                     key=lambda n: int(n.split("-")[1]), reverse=True)
    for name in folders:
        try:
            with open(os.path.join(work_dir, name, "trainer_state.json"), encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError):
            logger.warning("--resume: skipping %s, which was not completely saved", name)
            continue
        return os.path.join(work_dir, name)
    return None


def save_checkpoint(model, processor: SeqRecProcessor, output_dir: str, info: dict | None = None) -> None:
    """Model (safetensors) + processor (tokenizer, catalog, settings) + training info in one folder.

    Written atomically: into a hidden sibling folder marked unfinished, then renamed into place (the
    folder it replaces, e.g. the one holding the Trainer's checkpoints, is removed after). A process
    killed while saving leaves the earlier folder, or none, never a half-written one that loads or
    that `upload` accepts. Under torchrun / accelerate launch every rank holds the same model: rank 0
    writes it and the others wait until it is in place.
    """
    state_dict = _gathered_state_dict(model)  # every rank joins (ZeRO-3); None: the model's own tensors
    if not is_main_process():
        barrier()
        return
    try:
        _save_checkpoint(model, processor, output_dir, info, state_dict)
    finally:
        barrier()  # also when the save failed: the other ranks must not wait forever


def _gathered_state_dict(model) -> dict | None:
    """Under DeepSpeed ZeRO-3 each rank holds a shard of every parameter: gather them (a collective
    every rank must enter) so that rank 0 writes whole tensors. None without ZeRO-3."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return None
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if is_main_process() else None


def _save_checkpoint(model, processor: SeqRecProcessor, output_dir: str, info: dict | None, state_dict: dict | None) -> None:
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.saving-", dir=parent)
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it owner-only; the checkpoint gets the usual mode
    try:
        open(os.path.join(staging, INCOMPLETE_MARKER), "w").close()
        model.save_pretrained(staging, **({"state_dict": state_dict} if state_dict is not None else {}))
        processor.save_pretrained(staging)
        if info is not None:
            _write_info(staging, info)
        write_model_card(staging)
        os.remove(os.path.join(staging, INCOMPLETE_MARKER))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.lexists(output_dir):
        replaced = f"{staging}.replaced"
        os.rename(output_dir, replaced)
        os.rename(staging, output_dir)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.rename(staging, output_dir)


def _write_info(directory: str, info: dict) -> None:
    path = os.path.join(directory, TRAINING_INFO)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def record_results(directory: str, result) -> None:
    """Add an EvaluationResult (e.g. the one test evaluation) to training_info.json and the card
    (rank 0 only in a distributed run: every rank holds the same gathered result)."""
    if not is_main_process():
        return
    info = read_training_info(directory)
    info[result.split] = {**result.metrics, "users": result.num_users}
    info["exclude_history"] = result.exclude_history
    _write_info(directory, info)
    write_model_card(directory)


def read_training_info(directory: str) -> dict:
    path = os.path.join(directory, TRAINING_INFO)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
