"""End-to-end training recipes shared by the CLI and the quickstart: load a backbone, build the
processor and model, train with an unchanged HF `Trainer` (best checkpoint on validation),
save one checkpoint folder (model + processor + card + training info)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field

import torch
from transformers import Trainer, TrainingArguments, set_seed

from ..cards import write_model_card
from ..processing import ST2SI_DEFAULTS, SeqRecProcessor
from .ranking import RankingMetrics, keep_labelled_logits
from .st2si import SeqRecCollator, ilp_feature_datasets, st2si_datasets

logger = logging.getLogger(__name__)

TRAINING_INFO = "training_info.json"


@dataclass
class ST2SITrainingConfig:
    """Every knob of an ST2SI run (paper defaults where it gives them, appendix A.3)."""

    backbone: str = "tiny"
    tune_mode: str = "ilp"
    max_items: int = 50
    max_item_tokens: int = 32
    multi_query: bool = True
    id_alignment: bool = True
    windows: str = "last"  # training windows per user: "last" (paper) or "all"
    cache_states: bool = True  # ILP mode: compute backbone states once, reuse every epoch
    epochs: float = 10.0
    max_steps: int = -1
    learning_rate: float | None = None  # paper: 5e-5 full, 3e-4 ILP
    weight_decay: float = 0.0
    batch_size: int | None = None  # default: 256 on cached states, 8 on text
    gradient_accumulation_steps: int = 1
    eval_batch_size: int = 16
    seed: int = 42
    limit_users: int | None = None  # smoke runs: train/validate on the first N users only
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 3e-4 if self.tune_mode == "ilp" else 5e-5


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    if os.path.isfile(os.path.join(output_dir, "config.json")) and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a checkpoint; pass overwrite=True (--overwrite) to replace it"
        )


def _training_arguments(cfg: ST2SITrainingConfig, work_dir: str, cached: bool) -> TrainingArguments:
    by_steps = cfg.max_steps > 0
    return TrainingArguments(
        output_dir=work_dir,
        per_device_train_batch_size=cfg.batch_size or (256 if cached else 8),
        per_device_eval_batch_size=256 if cached else cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.resolved_learning_rate(),
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        eval_strategy="steps" if by_steps else "epoch",
        save_strategy="steps" if by_steps else "epoch",
        eval_steps=cfg.max_steps if by_steps else None,
        save_steps=cfg.max_steps if by_steps else None,
        load_best_model_at_end=True,
        metric_for_best_model="ndcg@10",
        greater_is_better=True,
        save_total_limit=1,
        logging_steps=10,
        report_to="none",
        seed=cfg.seed,
        disable_tqdm=not cfg.progress,
        use_cpu=not torch.cuda.is_available(),
    )


def train_st2si(data, output_dir: str, cfg: ST2SITrainingConfig | None = None, overwrite: bool = False, dataset_spec: dict | None = None):
    """Train ST2SI on `data` (a SequenceData) and save the best-on-validation checkpoint.

    Returns (model, processor, validation metrics).
    """
    from ..backbones import load_backbone
    from ..models import ST2SIForItemPrediction

    cfg = cfg or ST2SITrainingConfig()
    _check_output_dir(output_dir, overwrite)
    set_seed(cfg.seed)
    backbone, tokenizer = load_backbone(cfg.backbone, texts=data.catalog.texts() + [ST2SI_DEFAULTS["alignment_instruction"]])
    processor = SeqRecProcessor(
        tokenizer, data.catalog, method="st2si",
        max_items=cfg.max_items, max_item_tokens=cfg.max_item_tokens, multi_query=cfg.multi_query,
    )
    model = ST2SIForItemPrediction.from_backbone(
        backbone, num_items=len(data.catalog), query_token_id=processor.query_token_id, vocab_size=len(tokenizer),
        tune_mode=cfg.tune_mode, multi_query=cfg.multi_query, id_alignment=cfg.id_alignment,
        max_items=cfg.max_items, max_item_tokens=cfg.max_item_tokens,
    )
    if torch.cuda.is_available():
        model.cuda()
    cached = cfg.tune_mode == "ilp" and cfg.cache_states
    if cached:
        train_ds, valid_ds = ilp_feature_datasets(
            model, processor, data, id_alignment=cfg.id_alignment, windows=cfg.windows,
            batch_size=cfg.eval_batch_size, limit_users=cfg.limit_users, progress=cfg.progress,
        )
        extra = {}
    else:
        train_ds, valid_ds = st2si_datasets(
            processor, data, id_alignment=cfg.id_alignment, windows=cfg.windows, limit_users=cfg.limit_users
        )
        extra = {"data_collator": SeqRecCollator(processor), "preprocess_logits_for_metrics": keep_labelled_logits}
    work_dir = os.path.join(output_dir, "trainer_checkpoints")
    trainer = Trainer(
        model=model,
        args=_training_arguments(cfg, work_dir, cached),
        train_dataset=train_ds,
        eval_dataset=valid_ds,
        compute_metrics=RankingMetrics(),
        **extra,
    )
    trainer.train()
    valid_metrics = trainer.evaluate()
    model = trainer.model
    save_checkpoint(model, processor, output_dir, info={
        "method": "st2si",
        "dataset": dataset_spec or {"source": data.name},
        "dataset_stats": data.stats(),
        "training": asdict(cfg),
        "best_checkpoint": trainer.state.best_model_checkpoint and os.path.basename(trainer.state.best_model_checkpoint),
        "validation": {
            **{k.removeprefix("eval_"): v for k, v in valid_metrics.items() if "@" in k or k.endswith("mrr")},
            "users": len(valid_ds),
        },
    })
    shutil.rmtree(work_dir, ignore_errors=True)  # the best model is saved above
    return model, processor, valid_metrics


def save_checkpoint(model, processor: SeqRecProcessor, output_dir: str, info: dict | None = None) -> None:
    """Model (safetensors) + processor (tokenizer, catalog, settings) + training info in one folder."""
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if info is not None:
        _write_info(output_dir, info)
    write_model_card(output_dir)


def _write_info(directory: str, info: dict) -> None:
    path = os.path.join(directory, TRAINING_INFO)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def record_results(directory: str, result) -> None:
    """Add an EvaluationResult (e.g. the one test evaluation) to training_info.json and the card."""
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
