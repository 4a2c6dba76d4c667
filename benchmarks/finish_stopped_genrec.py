"""Finish a GenRec run that was stopped by hand (a CPU budget): load the best-on-validation
checkpoint the Trainer kept in <run>/trainer_checkpoints, rebuild the run's processor exactly as
`train_genrec` built it (SeqRecPipeline refuses it unless its item tokens equal the model's own
table), evaluate test once, and write a full checkpoint folder <run>/final with
training_info.json (every validation, the checkpoint chosen, the epoch the run was stopped at).

    python benchmarks/finish_stopped_genrec.py /tmp/runs/genrec-pt '{"pretrain_epochs": 5, "max_items": 20, ...}'

The JSON holds the GenRecTrainingConfig fields the run was started with. With the recipe's
constant learning rate after warmup, a run stopped after epoch K is the run `--epochs K` gives.
"""
import json
import os
import sys
from dataclasses import asdict

from genrec_hf import SeqRecPipeline, SeqRecProcessor, load_sequences
from genrec_hf.backbones import load_bart
from genrec_hf.evaluation import evaluate_recommender
from genrec_hf.models import GenRecForConditionalGeneration
from genrec_hf.models.saving import public_name
from genrec_hf.training.recipes import GenRecTrainingConfig, record_results, save_checkpoint

NOT_METRICS = ("epoch", "step", "loss", "runtime", "samples_per_second", "steps_per_second")

run_dir, cfg_json = sys.argv[1], json.loads(sys.argv[2])
cfg = GenRecTrainingConfig(**cfg_json)
data = load_sequences("ml-100k")
users = list(data.splits["train"]["user"])
numbers = range(len(data.catalog))
entity_texts = [f"item_{n}" for n in numbers] + [f"user_{r}" for r in range(len(users) + 1)] + ["user_unk"]
_, tokenizer = load_bart(cfg.backbone, texts=entity_texts)
processor = SeqRecProcessor(tokenizer, data.catalog, method="genrec", users=users, item_text_ids=cfg.item_text_ids,
                            seed=cfg.seed, max_items=cfg.max_items, max_length=cfg.max_length)
ckpts = os.path.join(run_dir, "trainer_checkpoints")
latest = max(os.listdir(ckpts), key=lambda name: int(name.rsplit("-", 1)[-1]))  # by step, not by name
state = json.load(open(os.path.join(ckpts, latest, "trainer_state.json")))
best = state["best_model_checkpoint"]
model = GenRecForConditionalGeneration.from_pretrained(os.path.join(ckpts, os.path.basename(best))).eval()
pipeline = SeqRecPipeline(model, processor)  # refuses a processor whose item tokens differ from the model's
history = [{k.removeprefix("eval_"): v for k, v in e.items() if k.startswith("eval_") or k in ("epoch", "step")}
           for e in state["log_history"] if "eval_ndcg@10" in e]
best_step = int(best.rsplit("-", 1)[-1])
best_eval = [e for e in history if e["step"] == best_step][-1]
last_epoch = max(e["epoch"] for e in history)
out = os.path.join(run_dir, "final")
save_checkpoint(model, processor, out, info={
    "method": "genrec", "dataset": {"source": "ml-100k"}, "dataset_stats": data.stats(),
    "training": {**asdict(cfg), "backbone": public_name(cfg.backbone), "stopped_by_hand_after_epoch": last_epoch},
    "metric_for_best_model": "ndcg@10", "best_metric": state["best_metric"], "best_checkpoint": os.path.basename(best),
    "validation_history": history,
    "validation": {**{k: v for k, v in best_eval.items() if k not in NOT_METRICS}, "users": len(data.splits["valid"])},
})
test = evaluate_recommender(pipeline, data.splits["test"], split_name="test", progress=False)
record_results(out, test)
print(json.dumps({"best": os.path.basename(best), "best_epoch": best_eval["epoch"], "last_epoch": last_epoch,
                  "valid": best_eval, "test": test.metrics, "valid_ratio": test.valid_ratio}))
