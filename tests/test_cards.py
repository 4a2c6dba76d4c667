"""Model cards say what the run recorded: MRR's cut-off, the selection metric, the backbone."""

import json

import pytest

from genrec_hf.cards import render_model_card

CONFIG = {"model_type": "st2si", "query_token": "[Q]", "num_items": 10, "tune_mode": "ilp", "max_items": 20,
          "max_item_tokens": 32, "text_config": {"model_type": "llama"}}
METRICS = {"hr@1": 0.01, "hr@5": 0.05, "hr@10": 0.1, "hr@20": 0.2, "ndcg@10": 0.05, "mrr": 0.03, "users": 943}


def card_for(folder, **info) -> tuple[str, dict]:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "training_info.json").write_text(json.dumps({"method": "st2si", "dataset": {"source": "ml-100k"}, **info}))
    card = render_model_card(str(folder), "me/st2si")
    return card.text, card.data.to_dict()


def metric_names(data: dict) -> dict:
    return {m["type"]: m["name"] for m in data["model-index"][0]["results"][0]["metrics"]}


def test_mrr_is_labelled_with_its_cutoff(tmp_path):
    text, data = card_for(tmp_path / "a", validation=METRICS, test=METRICS, metric_for_best_model="ndcg@10")
    assert metric_names(data)["mrr"] == "MRR@20" and metric_names(data)["ndcg@10"] == "NDCG@10"
    assert "| mrr@20 |" in text and "| mrr |" not in text and "(MRR@20)" in text
    # the cut-off is read from the recorded metrics, not assumed
    short = {k: v for k, v in METRICS.items() if k not in ("hr@10", "hr@20", "ndcg@10")}
    text, data = card_for(tmp_path / "b", test=short)
    assert metric_names(data)["mrr"] == "MRR@5" and "| mrr@5 |" in text


@pytest.mark.parametrize("info,said,not_said", [
    ({"metric_for_best_model": "ndcg@10"}, "selected on validation NDCG@10.", "patience:"),
    ({"metric_for_best_model": "mrr", "training": {"early_stopping_patience": 5}},
     "selected on validation MRR@20 (early stopping patience: 5 validations).", "NDCG@10."),
    ({"metric_for_best_model": "eval_loss", "training": {"early_stopping_patience": None}},
     "selected on validation loss.", "patience:"),
    ({}, "Test was evaluated once.", "selected on"),
])
def test_card_renders_the_recorded_selection(tmp_path, info, said, not_said):
    text, _ = card_for(tmp_path / "ckpt", validation=METRICS, test=METRICS, **info)
    assert said in text and not_said not in text


def test_card_names_the_offline_backbone(tmp_path):
    text, data = card_for(tmp_path / "a", test=METRICS, training={"backbone": "smollm2-135m"})
    assert "SmolLM2-135M-Instruct (`HuggingFaceTB/SmolLM2-135M-Instruct`, dequantized from the Q4_1 GGUF" in text
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    text, data = card_for(tmp_path / "b", test=METRICS, training={"backbone": "tiny"})
    assert "(`tiny`)" not in text and "A decoder-only LM, `tiny`," in text and "base_model" not in data


def test_card_for_a_lancer_checkpoint(tmp_path, catalog):
    from test_hub import build_lancer  # a tiny LANCER model + processor, nothing trained

    from genrec_hf.training.recipes import save_checkpoint

    model, processor = build_lancer(catalog)
    folder = tmp_path / "lancer"
    info = {"method": "lancer", "dataset": {"source": "ml-100k"}, "validation": METRICS, "test": METRICS,
            "metric_for_best_model": "ndcg@10", "training": {"backbone": "smollm2-135m", "early_stopping_patience": 5}}
    save_checkpoint(model, processor, str(folder), info=info)
    card = render_model_card(str(folder), "me/lancer-ml100k")
    text, data = card.text, card.data.to_dict()
    assert "LANCER sequential recommender" in text and 'AutoModel.from_pretrained("me/lancer-ml100k")' in text
    assert "keeping beam search on a trie of the catalog's item texts" in text  # the saved decode="trie"
    assert "knowledge prompt** (5 tokens" in text and "4 beams" in text
    assert "selected on validation NDCG@10 (early stopping patience: 5 validations)." in text
    assert "Generative ranking: beams mapped to catalog items" in text
    assert "lancer" in data["tags"] and data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert metric_names(data)["mrr"] == "MRR@20"


@pytest.mark.parametrize("kind", ["glm", "llama"])
def test_card_for_a_recsys_glm_checkpoint(tmp_path, catalog, kind):
    from test_hub import build_recsys_glm_toy  # a tiny RecSysGLM model + processor, nothing trained

    from genrec_hf.training.recipes import save_checkpoint

    model, processor = build_recsys_glm_toy(catalog, kind)
    folder = tmp_path / "recsys_glm"
    tuning = {"pretrained_backbone": kind == "llama", "mode": "lora r=8" if kind == "llama" else "full fine-tuning",
              "lora_merged": kind == "llama", "new_token_rows_trained": 5 if kind == "llama" else 0}
    info = {"method": "recsys_glm", "dataset": {"source": "ml-100k"}, "validation": METRICS, "test": METRICS,
            "metric_for_best_model": "ndcg@10", "tuning": tuning,
            "training": {"backbone": "smollm2-135m" if kind == "llama" else "glm-small", "pretrain_epochs": 8,
                         "early_stopping_patience": 5,
                         **({"tasks": {"rating": 1.0, "direct": 1.0}, "user_features": ["age", "occupation"]}
                            if kind == "glm" else {})}}
    save_checkpoint(model, processor, str(folder), info=info)
    card = render_model_card(str(folder), "me/recsys-glm-ml100k")
    text, data = card.text, card.data.to_dict()
    assert "RecSysGLM sequential recommender" in text and 'AutoModel.from_pretrained("me/recsys-glm-ml100k")' in text
    assert "dynamic positions (the paper's Figure 2): on" in text and "beam search (5 beams) kept on a trie" in text
    assert "8 blank-infilling pretraining epochs" in text
    assert "selected on validation NDCG@10 (early stopping patience: 5 validations)." in text
    assert "recsys_glm" in data["tags"] and metric_names(data)["mrr"] == "MRR@20"
    if kind == "glm":
        assert "A GLM (`glm-small`: 2 layers" in text and "tuning: full fine-tuning; backbone randomly initialised" in text
        assert "base_model" not in data
        assert "then multi-task fine-tuning\n  (task family weights {'rating': 1.0, 'direct': 1.0}" in text
        assert "user features written before the behaviour: age, occupation" in text
        assert "tasks = processor.task_runner(model)" in text
    else:
        assert "A rotary decoder LM" in text and "SmolLM2-135M-Instruct" in text
        assert "tuning: lora r=8 (adapters merged into the weights), the 5 added special-token rows trained" in text
        assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert "then next-item fine-tuning" in text and "task_runner" not in text and "user features" not in text
