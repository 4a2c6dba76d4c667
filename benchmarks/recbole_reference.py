"""RecBole's own SASRec and GRU4Rec on MovieLens-100k, as close to genrec_hf's protocol as RecBole
allows: the reference numbers for `genrec-hf train --method sasrec|gru4rec` (issue 12).

Runs in a separate virtual environment with RecBole (it needs numpy<2 and an old ray; genrec_hf is
not imported). Set up once, torch's CPU wheel first:

    python3 -m venv /work/recbole-venv
    /work/recbole-venv/bin/pip install torch==2.13.0
    /work/recbole-venv/bin/pip install recbole==1.2.1 "numpy<2" "pandas<2.3" "setuptools<81"

Full comparison (RecBole's defaults: 300 epochs at most, early stop after 10 validations without
improvement; three seeds):

    for seed in 2020 2021 2022; do
      OMP_NUM_THREADS=1 /work/recbole-venv/bin/python benchmarks/recbole_reference.py \
          --models SASRec GRU4Rec --epochs 300 --stopping-step 10 --seed $seed \
          --output runs/recbole-reference/seed$seed.json
    done

Cost: on the 2-core CPU box, one thread shared with other jobs, an epoch took about 450 s for
SASRec and 185 s for GRU4Rec (97171 training samples), so a full early-stopped run is hours per
model and seed there; `--gpu` runs RecBole on GPU 0 instead (same settings, device cuda).

Smoke test (2 epochs, both models, about 22 min on that box; checks the split, the checkpoint
reload and both metric paths):

    OMP_NUM_THREADS=1 /work/recbole-venv/bin/python benchmarks/recbole_reference.py \
        --epochs 2 --output /tmp/recbole-smoke.json

Other switches: `--exclude-history` (RecBole's own validation and test mask the user's seen items,
so model selection uses that too), `--timestamps recbole` (the wheel's file as RecBole reads it,
see (a)), `--set key=value` (any RecBole config key, value parsed as YAML, e.g.
`--set train_batch_size=256 --set hidden_size=128`), `--threads`, `--work-dir` (RecBole's log/,
log_tensorboard/ and checkpoints; a temporary folder by default, removed at the end).

Data and settings: the recbole wheel's `dataset_example/ml-100k/ml-100k.inter`, columns user_id,
item_id, timestamp, no filtering (943 users, 1682 items, 100000 interactions), `eval_args`
{split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}, MAX_ITEM_LIST_LENGTH 50,
loss_type CE, train_neg_sample_args None, topk [1, 5, 10, 20], metrics Hit/NDCG/MRR, valid_metric
NDCG@10 (compared unrounded, see below), CPU. Everything else is RecBole's default (SASRec.yaml / GRU4Rec.yaml, Adam lr 1e-3,
train_batch_size 2048, eval_batch_size 4096).

What is reported, per model:
- `recbole.best_valid` / `recbole.test`: RecBole's own numbers (its `best_valid_result` and
  `trainer.evaluate(test_data, load_best_model=True)`), i.e. with RecBole's tie handling (c).
- `protocol.{valid,test}` and `protocol.{valid,test}_exclude_history`: the same selected model's
  scores re-ranked by this script under genrec_hf's §3 rules (pessimistic rank over the 1682 real
  items, rank = 1 + number of other items scored >= the target; HR@k, NDCG@k, MRR@20; keys as
  genrec_hf.metrics.metrics_from_ranks), with and without masking every item the user saw before
  the target. These are the numbers to put next to genrec_hf's.
- `split_check`: RecBole's valid/test targets and test histories compared, user by user, with an
  independent stable (file order) chronological sort of the same file (our protocol). With the
  default `--timestamps exact` all 943 agree.
- `validation_history`: RecBole's validation metrics at each epoch, and the selected epoch.

How RecBole 1.2.1 differs from genrec_hf's protocol (design.md §3), read from its source
(paths under site-packages/recbole/):

(a) Sorting and timestamp ties. The sort itself is stable and keeps file order on ties: the
    sequential dataset sorts by [user_id, timestamp] (data/dataset/sequential_dataset.py:100,
    `self.sort(by=[self.uid_field, self.time_field], ascending=True)`), applying one
    `np.argsort(key, kind="stable")` per key, last key first (data/interaction.py:342-347), then
    `order: TO` sorts all samples by timestamp again, stably (data/dataset/dataset.py:1829), and
    leave-one-out takes each user's last two rows in that order (dataset.py:1666-1686, grouping
    that keeps row order, dataset.py:1591-1598). Nothing reorders rows before that (rm_dup_inter,
    whose pandas sort is not stable, is off). BUT the key is the timestamp after RecBole turns the
    float column into float32 (dataset.py:2207, `torch.FloatTensor(value)`), after min-max
    normalisation, which properties/dataset/ml-100k.yaml:50 switches on (`normalize_all: True`,
    dataset.py:705). float32 on [0, 1] cannot tell apart all of the 49282 distinct ml-100k
    timestamps (range 18.6M s: about 1 s resolution), so 164 of them merge with a neighbour and
    those now-tied rows fall back to file order: 83 users' sequences are ordered differently from
    ours, 4 users get another test item, 5 another validation item, and 37 test histories (last
    50 items) differ. (Without normalisation it is worse: raw timestamps in float32 are 64 s
    apart; 149 test and 254 validation items differ.) `--timestamps exact` (default) therefore
    hands RecBole a copy of the .inter file whose timestamps are replaced by their dense rank
    (same order, same ties, integers below 2**24 that float32 keeps exactly; normalisation off):
    RecBole's split is then ours, 0 differences in `split_check`. The copy is named
    ml-100k-exact because Config points a dataset called "ml-100k" at the wheel's own folder
    whatever data_path says (config/configurator.py:330-334); under that name RecBole loads
    properties/dataset/sample.yaml instead of ml-100k.yaml, and every key of ml-100k.yaml that
    matters here (fields, separator, load_col, filters, normalisation) is set explicitly.
    `--timestamps recbole` runs RecBole's stock reading of the wheel's file (normalize_all True).
(b) History items are NOT excluded for sequential models. FullSortEvalDataLoader builds the
    "history items to mask" (used items minus positives, data/dataloader/general_dataloader.py:237)
    only for non-sequential models; for sequential ones collate_fn returns None for them
    (general_dataloader.py:288). Trainer._full_sort_batch_eval masks only the padding item 0
    (trainer/trainer.py:537) and applies the history mask only when there is one (trainer.py:539).
    So RecBole's sequential full ranking = our default (history kept), over item_num = 1683 ids
    of which [PAD] is -inf. RecBole has no switch for it; `--exclude-history` patches
    FullSortEvalDataLoader.collate_fn to return every item the user saw before the target (all
    training items; for test also the validation item), so RecBole's own validation (model
    selection) and test exclude them. Both variants of our metrics are always computed anyway.
(c) Ties. RecBole's Hit/NDCG/MRR come from `torch.topk(scores, max(topk))` (evaluator/collector.py:
    154-169): the target's rank is its position in topk's output, and topk's order among equal
    scores is implementation-defined (on CPU a constant score row yields ids 1..20 in a scrambled
    order). So ties are broken arbitrarily, not pessimistically: a constant model scores HR@20 > 0
    for targets whose (first-appearance) internal id is <= 20. With continuous scores of a trained
    model ties are rare; `protocol.*` re-ranks pessimistically to remove the question.
(d) MRR is truncated at each k: evaluator/metrics.py:88-96 gives 1/rank only if the target is in
    the top k, so RecBole's `mrr@20` = our MRR (@ max(ks) = 20). NDCG with one target =
    1/log2(rank+1) within k (metrics.py:186-202), Hit = target in the top k: same definitions.
(e) Training data: prefix augmentation (sequential_dataset.py:77-150). Every interaction after a
    user's first becomes one sample: (up to 50 previous items, that item); the last two samples
    per user are the test and validation rows, the rest train, and the loss (CE over all items)
    is on that one target. genrec_hf (windows="all", training/item_ids.py) covers the same
    transitions with windows of 50 items labelled at every position, so a target early in a
    window sees fewer than 50 previous items (RecBole: always min(50, available)), and a batch
    is 64 windows instead of RecBole's 2048 samples (more optimizer steps per epoch).
Also: RecBole's early stopping keeps a tie as the new best (`value >= best`) and stops once more
than `stopping_step` validations in a row did not improve (utils/utils.py:137-144: 11 for
stopping_step 10); HF's EarlyStoppingCallback(patience 10) needs a strict improvement and stops
after 10. RecBole rounds every metric to metric_decimal_place (4 by default,
evaluator/base_metric.py:81), the early-stopping score included; this script sets 8 so selection
compares NDCG@10 as genrec_hf does (`--set metric_decimal_place=4` for RecBole's stock behaviour).
Item ids are remapped by first appearance (pad = 0); irrelevant to the metrics except
through (c).

Snags handled here (RecBole 1.2.1 on torch 2.13): torch >= 2.6 loads with weights_only=True,
and RecBole's checkpoint pickles its Config, so `trainer.evaluate(load_best_model=True)` fails:
`torch.load` is wrapped to default weights_only=False in this process only (the file is the one
this run just wrote). RecBole's Config.compatibility_settings uses np.float_ / np.unicode_
(config/configurator.py:630-635): numpy<2 is required. recbole.quick_start imports ray
(quick_start.py:20), whose 2.6.3 imports pkg_resources: setuptools<81. pandas is pinned <2.3
(RecBole 1.2.1 predates pandas 3). RecBole writes log/ and log_tensorboard/ into the current
folder, so the script works inside --work-dir.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time

MODELS = ("SASRec", "GRU4Rec")
KS = (1, 5, 10, 20)
FIELDS = ("user_id", "item_id", "timestamp")
EXACT_NAME = "ml-100k-exact"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--stopping-step", type=int, default=10)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--output", help="JSON file for the results")
    p.add_argument("--exclude-history", action="store_true",
                   help="RecBole's own validation/test mask the items the user saw before the target (not RecBole's default)")
    p.add_argument("--timestamps", choices=("exact", "recbole"), default="exact",
                   help="exact: dense-rank copy of the .inter file, RecBole's split = ours; recbole: the wheel's file as is")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra RecBole config (value parsed as YAML), repeatable")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", help="RecBole's logs and checkpoints (default: a temporary folder, removed)")
    p.add_argument("--show-progress", action="store_true")
    p.add_argument("--gpu", action="store_true", help="train on GPU 0 (default: CPU)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- compatibility patches

def patch_torch_load():
    """RecBole's checkpoints hold its Config object; torch >= 2.6 refuses them under its default
    weights_only=True. Default it to False for this process (RecBole loads only what it just saved)."""
    import torch

    if getattr(torch.load, "_recbole_reference", False):
        return
    original = torch.load

    @functools.wraps(original)
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    load._recbole_reference = True
    torch.load = load


def patch_history_exclusion():
    """Let FullSortEvalDataLoader hand a history mask to the trainer for sequential models too,
    where a loader carries `_reference_history` (uid -> LongTensor of item ids to mask). Must run
    before the loaders are built: they bind collate_fn when constructed."""
    import torch
    from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader

    if getattr(FullSortEvalDataLoader.collate_fn, "_recbole_reference", False):
        return
    original = FullSortEvalDataLoader.collate_fn

    def collate_fn(self, index):
        interaction, history, positive_u, positive_i = original(self, index)
        seen = self.__dict__.get("_reference_history")
        if history is None and seen is not None:
            uids = interaction[self.uid_field].tolist()
            rows = [torch.full((len(seen[u]),), r, dtype=torch.long) for r, u in enumerate(uids)]
            history = (torch.cat(rows), torch.cat([seen[u] for u in uids]))
        return interaction, history, positive_u, positive_i

    collate_fn._recbole_reference = True
    FullSortEvalDataLoader.collate_fn = collate_fn


# ---------------------------------------------------------------- data

def wheel_data_dir() -> str:
    import recbole

    return os.path.join(os.path.dirname(os.path.abspath(recbole.__file__)), "dataset_example")


def read_inter(path: str):
    """The .inter file as (header fields, rows of strings), in file order."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return header, rows


def column(header, name):
    return [h.split(":")[0] for h in header].index(name)


def reference_sequences(path: str) -> dict[str, list[str]]:
    """genrec_hf's protocol, independently: per user, items in a stable chronological sort
    (ties keep file order). Returns user token -> item tokens."""
    header, rows = read_inter(path)
    u, i, t = (column(header, f) for f in FIELDS)
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for pos, row in enumerate(rows):
        by_user.setdefault(row[u], []).append((float(row[t]), pos, row[i]))
    return {user: [item for _, _, item in sorted(events)] for user, events in by_user.items()}


def write_exact_copy(src: str, dst: str) -> int:
    """Copy `src` with timestamps replaced by their dense rank (1 = earliest): same order and
    ties, integers that float32 holds exactly. Returns the number of distinct timestamps."""
    header, rows = read_inter(src)
    t = column(header, "timestamp")
    distinct = sorted({float(row[t]) for row in rows})
    if len(distinct) >= 2 ** 24:
        raise ValueError("too many distinct timestamps for exact float32 ranks")
    rank = {v: r + 1 for r, v in enumerate(distinct)}
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            row = list(row)
            row[t] = str(rank[float(row[t])])
            f.write("\t".join(row) + "\n")
    return len(distinct)


# ---------------------------------------------------------------- metrics (genrec_hf §3)

def metrics_from_ranks(ranks, ks=KS) -> dict[str, float]:
    """Same keys and definitions as genrec_hf.metrics.metrics_from_ranks."""
    import torch

    ranks = torch.as_tensor(ranks, dtype=torch.float64).flatten()
    out = {f"hr@{k}": (ranks <= k).double().mean().item() for k in ks}
    for k in ks:
        out[f"ndcg@{k}"] = torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks)).mean().item()
    out["mrr"] = torch.where(ranks <= max(ks), 1.0 / ranks, torch.zeros_like(ranks)).mean().item()
    return out


def seen_items(train_feat, eval_feat, iid, list_field, uid, extra=None):
    """uid -> LongTensor of every item the user saw before each row of `eval_feat` (one row per
    user): items of the user's training rows (targets and their histories), the eval row's own
    history and, for test, the validation target (`extra`: uid -> item)."""
    import torch

    seen: dict[int, set[int]] = {}
    for feat in (train_feat, eval_feat):
        users = feat[uid].tolist()
        lists = feat[list_field].tolist()
        targets = feat[iid].tolist() if feat is train_feat else [None] * len(users)
        for user, items, target in zip(users, lists, targets):
            s = seen.setdefault(user, set())
            s.update(x for x in items if x)
            if target is not None:
                s.add(target)
    for user, item in (extra or {}).items():
        seen.setdefault(user, set()).add(item)
    return {u: torch.tensor(sorted(s), dtype=torch.long) for u, s in seen.items()}


def protocol_metrics(model, loader, device, seen) -> tuple[dict, dict]:
    """Re-rank the model's full-catalog scores pessimistically (item 0 = RecBole's [PAD], dropped),
    with history kept and with `seen` items masked. Calls the model directly, not RecBole's
    evaluation (and not the patched collate's mask, which is ignored here)."""
    import torch

    model.eval()
    kept, masked = [], []
    with torch.no_grad():
        for interaction, _history, _pos_u, positive_i in loader:
            scores = model.full_sort_predict(interaction.to(device)).view(len(positive_i), -1).double().cpu()
            scores = scores[:, 1:]  # real items only; ids shift by one
            targets = positive_i.long() - 1
            scores = scores.masked_fill(torch.isnan(scores), -math.inf)
            kept.append((scores >= scores.gather(1, targets[:, None])).sum(1))
            uids = interaction[loader.uid_field].tolist()
            rows = torch.cat([torch.full((len(seen[u]),), r, dtype=torch.long) for r, u in enumerate(uids)])
            cols = torch.cat([seen[u] for u in uids]) - 1
            scores[rows, cols] = -math.inf
            masked.append((scores >= scores.gather(1, targets[:, None])).sum(1))
    return metrics_from_ranks(torch.cat(kept)), metrics_from_ranks(torch.cat(masked))


def split_check(dataset, valid_feat, test_feat, reference: dict[str, list[str]], max_len: int) -> dict:
    """RecBole's validation/test targets and test histories against the reference sort."""
    uid, iid = dataset.uid_field, dataset.iid_field
    list_field = iid + dataset.config["LIST_SUFFIX"]

    def tokens(field, ids):
        return [str(x) for x in dataset.id2token(field, ids)]

    out = {"users": len(reference)}
    for name, feat, offset in (("valid", valid_feat, 2), ("test", test_feat, 1)):
        users = tokens(uid, feat[uid].numpy())
        targets = tokens(iid, feat[iid].numpy())
        out[f"{name}_rows"] = len(users)
        out[f"{name}_target_differs"] = sum(reference[u][-offset] != t for u, t in zip(users, targets))
    users = tokens(uid, test_feat[uid].numpy())
    lengths = test_feat[dataset.item_list_length_field].tolist()
    differs = 0
    for user, items, n in zip(users, test_feat[list_field].numpy(), lengths):
        if tokens(iid, items[:n]) != reference[user][:-1][-max_len:]:
            differs += 1
    out["test_history_differs"] = differs
    return out


# ---------------------------------------------------------------- run

def parse_overrides(pairs):
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def base_config(args, data_path, checkpoint_dir) -> dict:
    config = {
        "data_path": data_path,
        "checkpoint_dir": checkpoint_dir,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": list(FIELDS)},
        # no filtering of any kind
        "rm_dup_inter": None,
        "val_interval": None,
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "filter_inter_by_user_or_item": False,
        "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": list(KS),
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 8,  # RecBole's 4 rounds the score that early stopping compares
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": args.gpu,
        "gpu_id": "0" if args.gpu else "",
        "device": "cuda" if args.gpu else "cpu",  # RecBole recomputes it from gpu_id (cpu when empty)
        "worker": 0,
        "show_progress": args.show_progress,
    }
    if args.timestamps == "exact":
        config["normalize_all"] = False  # dense ranks are exact in float32; leave them as they are
    else:
        config["normalize_all"] = True  # as properties/dataset/ml-100k.yaml (RecBole's stock reading)
    config.update(parse_overrides(args.set))
    return config


def run_model(name, dataset_name, config_dict, reference, exclude_history, threads=1):
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    started = time.time()
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config also reads `--key=value` from sys.argv
    try:
        config = Config(model=name, dataset=dataset_name, config_dict=dict(config_dict))
    finally:
        sys.argv = argv
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    uid, iid = dataset.uid_field, dataset.iid_field
    list_field = iid + config["LIST_SUFFIX"]
    train_feat = train_data._dataset.inter_feat
    valid_feat, test_feat = valid_data._dataset.inter_feat, test_data._dataset.inter_feat

    check = split_check(dataset, valid_feat, test_feat, reference, config["MAX_ITEM_LIST_LENGTH"])
    seen_valid = seen_items(train_feat, valid_feat, iid, list_field, uid)
    valid_target = dict(zip(valid_feat[uid].tolist(), valid_feat[iid].tolist()))
    seen_test = seen_items(train_feat, test_feat, iid, list_field, uid, extra=valid_target)
    if exclude_history:
        valid_data._reference_history = seen_valid
        test_data._reference_history = seen_test

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    history = []
    valid_epoch = trainer._valid_epoch

    def recorded_valid_epoch(*a, **kw):
        score, result = valid_epoch(*a, **kw)
        history.append({"epoch": len(history), **{k: float(v) for k, v in result.items()}})
        return score, result

    trainer._valid_epoch = recorded_valid_epoch
    fit_started = time.time()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True,
                                                      show_progress=config["show_progress"])
    train_seconds = time.time() - fit_started
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    # the model now holds the best-on-validation weights
    valid_kept, valid_masked = protocol_metrics(model, valid_data, config["device"], seen_valid)
    test_kept, test_masked = protocol_metrics(model, test_data, config["device"], seen_test)
    key = config["valid_metric"].lower()
    # RecBole keeps the last of equal best scores (early_stopping: value >= best)
    best_epoch = max((h["epoch"] for h in history if h[key] == best_valid_score), default=None)
    return {
        "recbole": {
            "best_valid": {k: float(v) for k, v in (best_valid_result or {}).items()},
            "test": {k: float(v) for k, v in test_result.items()},
            "history_excluded": exclude_history,
        },
        "protocol": {
            "valid": valid_kept,
            "valid_exclude_history": valid_masked,
            "test": test_kept,
            "test_exclude_history": test_masked,
        },
        "best_epoch": best_epoch,
        "epochs_run": len(trainer.train_loss_dict),
        "validation_history": history,
        "train_loss": {int(k): float(v) for k, v in trainer.train_loss_dict.items()},
        "split_check": check,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "item_num_with_pad": int(dataset.item_num),
        "train_rows": len(train_feat),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "model_config": {k: config[k] for k in ("hidden_size", "embedding_size", "n_layers", "n_heads", "inner_size",
                                                 "num_layers", "hidden_dropout_prob", "attn_dropout_prob",
                                                 "dropout_prob", "hidden_act", "initializer_range", "layer_norm_eps",
                                                 "learning_rate", "train_batch_size", "eval_batch_size", "weight_decay")
                         if config[k] is not None},
    }


def fmt(metrics: dict, keys) -> str:
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    import recbole

    patch_torch_load()
    patch_history_exclusion()

    output = os.path.abspath(args.output) if args.output else None
    temp_work = args.work_dir is None
    work_dir = os.path.abspath(args.work_dir) if args.work_dir else tempfile.mkdtemp(prefix="recbole-reference-")
    os.makedirs(work_dir, exist_ok=True)
    source = os.path.join(wheel_data_dir(), "ml-100k", "ml-100k.inter")
    reference = reference_sequences(source)
    lengths = [len(s) for s in reference.values()]
    stats = {
        "users": len(reference),
        "items": len({i for s in reference.values() for i in s}),
        "interactions": sum(lengths),
        "mean_length": round(sum(lengths) / len(lengths), 2),
        "source": source,
    }
    if args.timestamps == "exact":
        # another name: RecBole's Config points dataset "ml-100k" at its own dataset_example folder
        # whatever data_path says (config/configurator.py:330-334)
        dataset_name, data_path = EXACT_NAME, os.path.join(work_dir, "data")
        stats["distinct_timestamps"] = write_exact_copy(
            source, os.path.join(data_path, EXACT_NAME, EXACT_NAME + ".inter"))
    else:
        dataset_name, data_path = "ml-100k", wheel_data_dir()
    stats["recbole_dataset"] = dataset_name
    print(f"ml-100k: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions, "
          f"mean length {stats['mean_length']}; timestamps {args.timestamps}; history "
          f"{'excluded' if args.exclude_history else 'kept'} in RecBole's own evaluation", flush=True)

    config_dict = base_config(args, data_path, os.path.join(work_dir, "saved"))
    cwd = os.getcwd()
    os.chdir(work_dir)  # RecBole writes log/ and log_tensorboard/ into the current folder
    results = {}
    try:
        for name in args.models:
            print(f"== {name}: up to {args.epochs} epochs, stopping_step {args.stopping_step}, seed {args.seed}", flush=True)
            results[name] = run_model(name, dataset_name, config_dict, reference, args.exclude_history, args.threads)
    finally:
        os.chdir(cwd)
        if temp_work:
            shutil.rmtree(work_dir, ignore_errors=True)

    recbole_keys = ["hit@1", "hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@20"]
    ours = ["hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"]
    for name, r in results.items():
        print(f"\n{name}: best epoch {r['best_epoch']} of {r['epochs_run']} run, {r['train_seconds']} s training, "
              f"{r['parameters']} parameters, {r['train_rows']} training rows")
        print(f"  split check: {r['split_check']}")
        print(f"  RecBole best valid : {fmt(r['recbole']['best_valid'], recbole_keys)}")
        print(f"  RecBole test       : {fmt(r['recbole']['test'], recbole_keys)}")
        for split in ("valid", "test", "valid_exclude_history", "test_exclude_history"):
            print(f"  protocol {split:<21}: {fmt(r['protocol'][split], ours)}")
    if output:
        settings = {k: v for k, v in config_dict.items() if k not in ("data_path", "checkpoint_dir")}
        payload = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "python": sys.version.split()[0]},
            "timestamps": args.timestamps,
            "exclude_history_in_recbole_eval": args.exclude_history,
            "threads": args.threads,
            "dataset": stats,
            "settings": settings,
            "protocol_note": "protocol.*: pessimistic ranks over the 1682 items, HR@k, NDCG@k, MRR@20 (genrec_hf §3), "
                             "from the model RecBole selected on validation NDCG@10",
            "models": results,
        }
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        with open(output, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"\nwrote {output}")
    return results


if __name__ == "__main__":
    main()
