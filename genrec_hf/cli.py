"""Command line: `genrec-hf data stats | train | evaluate | recommend | upload`."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

logger = logging.getLogger("genrec_hf")


def _bounded(convert, low=None, high=None, low_inclusive: bool = True, also: tuple = (), allowed: str = ""):
    """An argparse `type=`: a finite number in [low, high] (or one of `also`); anything else is a
    one-line usage error naming the allowed range."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is not None and (value in also or (
                math.isfinite(value) and (low is None or value > low or (low_inclusive and value == low))
                and (high is None or value <= high))):
            return value
        raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
    return parse


POSITIVE_INT = _bounded(int, low=1, allowed="an integer >= 1")
NON_NEGATIVE_INT = _bounded(int, low=0, allowed="an integer >= 0")
MAX_STEPS = _bounded(int, low=1, also=(-1,), allowed="an integer >= 1, or -1 for no limit")
SEED = _bounded(int, low=0, high=2**32 - 1, allowed="an integer from 0 to 2**32-1")
POSITIVE_FLOAT = _bounded(float, low=0, low_inclusive=False, allowed="a number > 0")
NON_NEGATIVE_FLOAT = _bounded(float, low=0, allowed="a number >= 0")
PROBABILITY = _bounded(float, low=0, high=1, allowed="a number from 0 to 1")


# --flag -> LancerTrainingConfig field, for the flags only lancer reads (default None: the config's default)
LANCER_FLAGS = {
    "--knowledge-epochs": "knowledge_epochs", "--stage1-epochs": "stage1_epochs", "--stage2": "stage2",
    "--stage2-epochs": "stage2_epochs", "--stage2-learning-rate": "stage2_learning_rate", "--variant": "variant",
    "--decode": "decode", "--eval-users": "eval_users", "--lora-r": "lora_r", "--lora-alpha": "lora_alpha",
    "--num-knowledge-tokens": "num_knowledge_tokens", "--prompt-hidden-size": "prompt_hidden_size", "--loss-on": "loss_on",
    "--prompt-visibility": "prompt_visibility",
    "--lm-layers": "lm_layers", "--init-from": "init_from",
}
# train flags only some methods read: --flag -> (args dest, those methods); unset they are None
METHOD_FLAGS = {
    **{flag: (dest, ("lancer",)) for flag, dest in LANCER_FLAGS.items()},
    "--eval-users": ("eval_users", ("lancer", "recsys_glm")), "--lm-layers": ("lm_layers", ("lancer", "recsys_glm")),
    "--lora-rank": ("lora_rank", ("recsys_glm",)), "--no-dynamic-positions": ("dynamic_positions", ("recsys_glm",)),
    "--keep-lora": ("keep_lora", ("recsys_glm",)), "--tasks": ("tasks", ("recsys_glm",)),
    "--user-features": ("user_features", ("recsys_glm",)), "--tune-layers": ("tune_layers", ("st2si",)),
    "--max-train-minutes": ("max_train_minutes", ("st2si",)),
    "--resume": ("resume", ("st2si", "genrec", "sasrec", "gru4rec")),
}
GENERATIVE = ("genrec", "lancer", "recsys_glm")
ITEM_ID_MODELS = ("sasrec", "gru4rec")  # no text, no backbone
TRAIN_METHODS = ("st2si", "genrec", "lancer", "recsys_glm", *ITEM_ID_MODELS)
LANCER_WINDOWS = ("random", "last")
DECODE_MODES = ("cosine", "trie")
STRATEGIES = ("beam_search", "beam_sample", "greedy", "sample")


def _windows(text: str) -> str:
    """--windows: random | last | all, or a number N >= 1 of newest windows (checked before any model loads)."""
    if text in ("random", "last", "all") or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"expected random | last | all or an integer N >= 1, got {text!r}")


def _task_weights(text: str) -> dict:
    """--tasks family=weight,...: RecSysGLM's multi-task mix (checked before any model loads)."""
    from .models.recsys_glm.task_prompts import FAMILIES

    weights = {}
    for part in text.split(","):
        family, _, weight = part.strip().partition("=")
        if family not in FAMILIES:
            raise argparse.ArgumentTypeError(f"unknown task family {family!r}; use {', '.join(FAMILIES)}")
        try:
            weights[family] = float(weight or 1.0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--tasks {part!r}: the weight after '=' must be a number") from None
        if weights[family] < 0:
            raise argparse.ArgumentTypeError(f"--tasks {part!r}: weights must be >= 0")
    return weights


def _add_dataset_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("dataset", help="ml-100k (offline) or a path to a dataset file/folder")
    else:
        p.add_argument("--dataset", default=None, help="ml-100k (offline) or a path (default: ml-100k, or the checkpoint's)")
    p.add_argument("--format", default=None, help="ml-100k | recbole | ml-1m | p5 | amazon | csv (guessed if omitted)")
    p.add_argument("--item-file", default=None, help="item table / Amazon metadata")
    p.add_argument("--k-core", type=NON_NEGATIVE_INT, default=None, help="k-core filter, 0 disables (default: 0 for MovieLens, else 5)")
    p.add_argument("--template", default="title", help="item text template (default: title)")
    p.add_argument("--deduplicate", action="store_true", help="keep the first of repeated (user, item) pairs")
    p.add_argument("--missing-item-text", default="error", choices=("error", "drop", "keep"))


def _dataset_spec(args) -> dict:
    """The load_sequences arguments of a run, saved with checkpoints so evaluate/recommend rebuild the same data."""
    return {
        "source": str(args.dataset),
        "format": args.format,
        "k_core": args.k_core,
        "item_file": args.item_file,
        "template": args.template,
        "deduplicate": args.deduplicate,
        "missing_item_text": args.missing_item_text,
    }


def _load(args):
    return _load_spec(_dataset_spec(args))


def _load_spec(spec: dict):
    from .data import load_sequences

    spec = dict(spec)
    return load_sequences(spec.pop("source"), **spec)


def _check_checkpoint_folder(directory: str) -> None:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint folder not found: {directory}")
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise FileNotFoundError(f"{directory} is not a checkpoint folder (no config.json)")


def _model_type(directory: str) -> str | None:
    """config.json's model_type (read before anything loads, so flag errors come first)."""
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        return json.load(f).get("model_type")


def _generation_options(args, directory: str) -> dict:
    """recommend kwargs from --decode / --strategy / --num-beams / --unconstrained, checked against
    the checkpoint's method: decode and strategy are LANCER's, --unconstrained GenRec's and RecSysGLM's."""
    model_type = _model_type(directory)
    lancer_only = [flag for flag, value in (("--decode", args.decode), ("--strategy", args.strategy)) if value is not None]
    if lancer_only and model_type != "lancer":
        verb = "apply" if len(lancer_only) > 1 else "applies"
        raise ValueError(f"{' and '.join(lancer_only)} {verb} only to LANCER checkpoints; {directory} holds a {model_type} model")
    options = {}
    if getattr(args, "unconstrained", False):
        if model_type == "lancer":
            raise ValueError("--unconstrained is GenRec's; a LANCER checkpoint decodes freely with --decode cosine "
                             "(generated text mapped by cosine similarity) or on the catalog trie with --decode trie")
        if model_type not in ("genrec", "recsys_glm"):
            raise ValueError(f"--unconstrained applies only to GenRec and RecSysGLM checkpoints; {directory} holds a {model_type} model")
        options["constrained"] = False
    if getattr(args, "num_beams", None):
        if model_type not in GENERATIVE:
            raise ValueError(f"--num-beams applies only to generative checkpoints; {directory} holds a {model_type} model")
        options["num_beams"] = args.num_beams
    if model_type == "lancer":  # always explicit, so the printed and recorded settings say what ran
        options["decode"] = args.decode or _lancer_config(directory)["decode"]
        options["strategy"] = args.strategy or "beam_search"
    return options


def _lancer_config(directory: str) -> dict:
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return {"decode": config.get("decode", "cosine"), "beam_size": config.get("beam_size", 10)}


def _checkpoint_data(args, directory: str):
    """The dataset a checkpoint was trained on (or the one given), checked against its catalog."""
    from .training.recipes import read_training_info

    _check_checkpoint_folder(directory)
    info = read_training_info(directory)
    dataset_given = args.dataset is not None
    if not dataset_given and "dataset" not in info:
        raise ValueError(f"{directory} does not record its dataset (no training_info.json): pass --dataset")
    data = _load(args) if dataset_given else _load_spec(info["dataset"])
    return data


def cmd_data_stats(args) -> int:
    data = _load(args)
    if args.json:
        print(json.dumps({"raw": data.raw_stats, "filtered": data.stats(), "filter": data.filter_report}))
    else:
        print(data.describe())
    return 0


def _recommender_for(args, data):
    if args.method == "popularity":
        from .baselines import PopularityRecommender

        return PopularityRecommender.fit(data.splits["train"]["items"], len(data.catalog))
    raise SystemExit(f"error: unknown --method {args.method!r}")


def _load_pipeline(directory: str, data, **recommend_kwargs):
    from .pipeline import SeqRecPipeline

    pipeline = SeqRecPipeline.from_pretrained(directory, recommend_kwargs=recommend_kwargs)
    if pipeline.processor.catalog.original_ids != data.catalog.original_ids:
        raise ValueError(
            f"catalog mismatch: the checkpoint's catalog ({pipeline.processor.num_items} items) is not the "
            f"dataset's ({len(data.catalog)} items); evaluate on the dataset it was trained on"
        )
    return pipeline


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_recommender

    if (args.checkpoint is None) == (args.method is None):
        raise SystemExit("error: give either a CHECKPOINT folder or --method popularity")
    top_k = args.top_k
    if args.checkpoint is not None:
        _check_checkpoint_folder(args.checkpoint)
        extra = _generation_options(args, args.checkpoint)
        if top_k is None and "decode" in extra:  # LANCER: one list of beams (paper: 10 beams, @5 and @10)
            top_k = args.num_beams or _lancer_config(args.checkpoint)["beam_size"]
        data = _checkpoint_data(args, args.checkpoint)
        recommender = _load_pipeline(args.checkpoint, data, **extra)
        args.method = args.checkpoint
    else:
        used = [flag for flag, value in (("--decode", args.decode), ("--strategy", args.strategy),
                                         ("--num-beams", args.num_beams), ("--unconstrained", args.unconstrained or None))
                if value is not None]
        if used:
            raise ValueError(f"{', '.join(used)} {'apply' if len(used) > 1 else 'applies'} only to generative checkpoints, "
                             f"not --method {args.method}")
        if args.dataset is None:
            args.dataset = "ml-100k"
        data = _load(args)
        recommender = _recommender_for(args, data)
    result = evaluate_recommender(
        recommender,
        data.splits[args.split],
        batch_size=args.batch_size,
        exclude_history=args.exclude_history,
        max_history=args.max_history,
        split_name=args.split,
        progress=not args.no_progress,
        top_k=top_k,
        limit=args.limit_users,
    )
    if args.json:
        print(json.dumps({"method": args.method, "dataset": data.stats(), **result.to_dict()}))
    else:
        print(data.describe())
        print(f"\nmethod {args.method}")
        print(result.format())
    return 0


def _training_config(args):
    """The method's training config from the CLI flags (unset flags keep the method's defaults)."""
    from .training.recipes import (GenRecTrainingConfig, ItemIDTrainingConfig, LancerTrainingConfig, RecSysGLMTrainingConfig,
                                   ST2SITrainingConfig)

    foreign: dict[tuple, list[str]] = {}  # the methods that read them -> flags given to another method
    for flag, (dest, methods) in METHOD_FLAGS.items():
        if getattr(args, dest) is not None and args.method not in methods:
            foreign.setdefault(methods, []).append(flag)
    if foreign:
        hint = {"recsys_glm": " (recsys_glm's LoRA rank is --lora-rank)", "lancer": " (lancer's LoRA rank is --lora-r)"}
        lora = any(f in ("--lora-r", "--lora-rank") for flags in foreign.values() for f in flags)
        raise ValueError("; ".join(f"{', '.join(flags)} {'apply' if len(flags) > 1 else 'applies'} only to --method "
                                   f"{' or '.join(methods)}" for methods, flags in foreign.items())
                         + (hint.get(args.method, "") if lora else ""))
    common = {"max_steps": args.max_steps, "seed": args.seed, "limit_users": args.limit_users, "progress": not args.no_progress}
    for name in ("learning_rate", "batch_size", "max_items", "early_stopping_patience"):
        if getattr(args, name) is not None:
            common[name] = getattr(args, name)
    if args.method in ITEM_ID_MODELS:
        if args.backbone is not None:
            raise ValueError(f"--backbone does not apply to --method {args.method}: it reads item ids, not text")
        if args.epochs is not None:
            common["epochs"] = args.epochs
        return ItemIDTrainingConfig(method=args.method, **common, **({"windows": args.windows} if args.windows else {}),
                                    resume=bool(args.resume))
    common["backbone"] = args.backbone
    if args.method == "lancer":
        if args.epochs is not None:
            raise ValueError("--epochs is not used by lancer, which trains in stages: give --knowledge-epochs, "
                             "--stage1-epochs and/or --stage2-epochs")
        if args.windows is not None and args.windows not in LANCER_WINDOWS:
            raise ValueError(f"--windows {args.windows} is ST2SI's; lancer trains on: {' | '.join(LANCER_WINDOWS)}")
        extra = {dest: getattr(args, dest) for dest in LANCER_FLAGS.values() if getattr(args, dest) is not None}
        stage2 = extra.get("stage2", "none")
        if extra.get("variant") == "bare" and stage2 == "none":
            raise ValueError("--variant bare has no prompts to tune: give --stage2 full or --stage2 lora (the LM alone)")
        for flag in ("--lora-r", "--lora-alpha"):
            if LANCER_FLAGS[flag] in extra and stage2 != "lora":
                raise ValueError(f"{flag} only applies with --stage2 lora")
        for flag in ("--stage2-epochs", "--stage2-learning-rate"):
            if LANCER_FLAGS[flag] in extra and stage2 == "none":
                raise ValueError(f"{flag} needs --stage2 full or --stage2 lora")
        if args.beam_size is not None:
            extra["beam_size"] = args.beam_size
        return LancerTrainingConfig(**common, **extra, max_item_tokens=args.max_item_tokens, **({"windows": args.windows} if args.windows else {}))
    if args.epochs is not None:
        common["epochs"] = args.epochs
    if args.method == "recsys_glm":
        if args.windows is not None:
            raise ValueError("--windows is ST2SI's, LANCER's and the ID models'; recsys_glm picks its fine-tuning targets with "
                             "--finetune-targets random|last")
        extra = {"max_item_tokens": args.max_item_tokens}
        for dest, field in (("eval_users", "eval_users"), ("lm_layers", "lm_layers"), ("lora_rank", "lora_r"),
                            ("dynamic_positions", "dynamic_positions"), ("beam_size", "beam_size"),
                            ("pretrain_epochs", "pretrain_epochs"), ("finetune_targets", "finetune_targets"),
                            ("tasks", "tasks"), ("user_features", "user_features")):
            if getattr(args, dest) is not None:
                extra[field] = getattr(args, dest)
        if args.keep_lora:
            if args.lora_rank == 0:
                raise ValueError("--keep-lora needs LoRA adapters: not with --lora-rank 0 (full fine-tuning)")
            extra["merge_lora"] = False
        return RecSysGLMTrainingConfig(**common, **extra)
    if args.method == "st2si":
        if args.tune_layers is not None and args.tune_mode != "top-k":
            raise ValueError("--tune-layers applies only with --tune-mode top-k")
        if args.tune_mode == "top-k" and args.windows in (None, "random") and not args.no_cache:
            raise ValueError("--tune-mode top-k computes the frozen layers once per window: give fixed --windows "
                             "(last, all or a number N), or --no-cache to recompute them every step")
        return ST2SITrainingConfig(
            **common, tune_mode=args.tune_mode.replace("-", "_"), max_item_tokens=args.max_item_tokens,
            **({"tune_layers": args.tune_layers} if args.tune_layers is not None else {}), multi_query=not args.single_query,
            id_alignment=not args.no_alignment, windows=args.windows or "random", cache_states=not args.no_cache,
            max_train_minutes=args.max_train_minutes, resume=bool(args.resume),
        )
    extra = {"pretrain_max_steps": args.pretrain_max_steps, "item_text_ids": args.item_text_ids, "eval_every": args.eval_every,
             "unknown_user_prob": args.unknown_user_prob, "id_embedding_scale": args.id_embedding_scale}
    if args.beam_size is not None:
        extra["beam_size"] = args.beam_size
    if args.pretrain_epochs is not None:
        extra["pretrain_epochs"] = args.pretrain_epochs
    if args.finetune_targets is not None:
        extra["finetune_targets"] = args.finetune_targets
    return GenRecTrainingConfig(**common, **extra, resume=bool(args.resume))


def cmd_train(args) -> int:
    from .distributed import is_main_process
    from .evaluation import evaluate_recommender
    from .pipeline import SeqRecPipeline
    from .training.recipes import (ranking_summary, record_results, train_genrec, train_item_id_model, train_lancer,
                                   train_recsys_glm, train_st2si)

    trainers = {"st2si": train_st2si, "genrec": train_genrec, "lancer": train_lancer, "recsys_glm": train_recsys_glm,
                **{method: train_item_id_model for method in ITEM_ID_MODELS}}
    if args.backbone is None and args.method not in ITEM_ID_MODELS:
        args.backbone = "glm-tiny" if args.method == "recsys_glm" else "tiny"
    if args.dataset is None:
        args.dataset = "ml-100k"
    cfg = _training_config(args)  # flag errors before the data and the backbone load
    data = _load(args)
    if is_main_process():
        print(data.describe())
    model, processor, valid = trainers[args.method](data, args.output_dir, cfg, overwrite=args.overwrite, dataset_spec=_dataset_spec(args))
    if is_main_process():
        shown = ranking_summary(valid)
        print("\nbest validation: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
        print(f"checkpoint saved to {args.output_dir}")
    if not args.skip_test:
        # generative methods: the list length and decoding validation selected on (top_k = the beams)
        top_k = getattr(cfg, "beam_size", None)
        extra = {"decode": cfg.decode} if args.method == "lancer" else {}
        result = evaluate_recommender(SeqRecPipeline(model, processor, **extra), data.splits["test"], split_name="test",
                                      progress=not args.no_progress, limit=args.limit_users, top_k=top_k)
        record_results(args.output_dir, result)  # rank 0 writes; every rank holds the gathered result
        if is_main_process():
            print(result.format())
    return 0


def cmd_recommend(args) -> int:
    _check_checkpoint_folder(args.checkpoint)
    extra = _generation_options(args, args.checkpoint)
    data = _checkpoint_data(args, args.checkpoint)
    pipeline = _load_pipeline(args.checkpoint, data, **extra)
    catalog = data.catalog
    if args.items:
        history = catalog.ids_of(i.strip() for i in args.items.split(","))
        who = "given history"
    else:
        if args.user is None:
            raise SystemExit("error: give --user ID or --items ID,ID,...")
        if args.user not in data.sequences:
            raise KeyError(f"unknown user {args.user!r}: the dataset has {len(data.sequences)} users (e.g. {next(iter(data.sequences))!r})")
        history = data.sequences[args.user]  # everything the user did: recommend what comes next
        who = f"user {args.user}"
    users = None if args.items else [args.user]  # GenRec reads the user's own ID embedding
    exclude = not args.include_history
    top_k = args.top_k
    if top_k > len(catalog):
        print(f"note: --top-k {top_k} is more than the catalog's {len(catalog)} items; listing at most {len(catalog)}")
        top_k = len(catalog)
    out = pipeline.recommend([history], top_k=top_k, exclude_history=exclude, users=users)
    print(f"{who}, last {min(5, len(history))} of {len(history)} items:")
    for item in history[-5:]:
        print(f"    {catalog.original_id(item):>8}  {catalog.text(item)}")
    ranked = [(i, sc) for i, sc in zip(out.item_ids[0].tolist(), out.scores[0].tolist()) if i >= 0]  # -1 pads
    short = "" if len(ranked) == top_k else f"; {top_k} asked, only {len(ranked)} {'unseen ' if exclude else ''}items returned"
    if "decode" in extra:  # LANCER: say how the list was made
        beams = out.num_generated[0].item()
        one_text_cosine = extra["decode"] == "cosine" and not extra["strategy"].startswith("beam")
        how = "scores: cosine similarity to the generated text" if one_text_cosine else "scores: log-probabilities of the generated texts"
        print(f"LANCER: {extra['decode']} decoding, {extra['strategy']}, {beams} generated text(s); {how}")
        if short and beams > 1:
            short += " (one item per beam: --num-beams N lists more)"
    print(f"top-{len(ranked)} ({'unseen' if exclude else 'seen items included'}{short}):")
    for rank, (item, score) in enumerate(ranked, start=1):
        print(f"{rank:>3}. {catalog.original_id(item):>8}  {catalog.text(item)}  ({score:.3f})")
    return 0


def cmd_upload(args) -> int:
    from .hub import upload_checkpoint

    plan = upload_checkpoint(args.checkpoint, args.repo_id, private=args.private, commit_message=args.commit_message,
                             revision=args.revision, dry_run=args.dry_run)
    print(plan.format())
    if args.dry_run:
        print("dry run: checked, card rendered, nothing pushed")
    return 0


def cmd_benchmark(args) -> int:
    from .benchmark import run_benchmark

    return run_benchmark(args)


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-beams", type=POSITIVE_INT, default=None,
                   help="generative models: beams (default: the checkpoint's; at least --top-k for beam strategies)")
    p.add_argument("--decode", default=None, choices=DECODE_MODES,
                   help="LANCER: cosine (generated text mapped by cosine similarity) | trie (beams kept on the catalog); "
                        "default: the checkpoint's")
    p.add_argument("--strategy", default=None, choices=STRATEGIES,
                   help="LANCER: beam_search (default) | beam_sample | greedy | sample (one text: cosine ranks the "
                        "catalog by similarity to it, the trie gives one item)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrec-hf", description="LLM-based sequential recommenders on HF")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="raw and filtered dataset statistics")
    _add_dataset_args(stats, positional=True)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_data_stats)

    tr = sub.add_parser("train", help="train a method and save a checkpoint folder (best on validation)")
    tr.add_argument("--method", required=True, choices=TRAIN_METHODS,
                    help="st2si | genrec | lancer | recsys_glm | sasrec | gru4rec (the classical item-ID references)")
    _add_dataset_args(tr)
    tr.add_argument("--backbone", default=None,
                    help="st2si, lancer: tiny | smollm2-135m | folder | Hub id (lancer: a causal LM, gpt2 in the paper); "
                         "genrec: tiny | bart-small | BART folder | Hub id (default: tiny); recsys_glm: glm-tiny (default) | "
                         "glm-small (native GLM, random init) | tiny (random Llama) | smollm2-135m | Llama-family or "
                         "THUDM GLM folder; sasrec, gru4rec: none (item ids only)")
    tr.add_argument("--output-dir", required=True)
    tr.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --output-dir")
    tr.add_argument("--resume", action="store_const", const=True, default=None,
                    help="st2si, genrec, sasrec, gru4rec: continue a killed run from the newest epoch checkpoint "
                         "in --output-dir/trainer_checkpoints (same flags as the first run)")
    tr.add_argument("--epochs", type=POSITIVE_FLOAT, default=None,
                    help="st2si, genrec, recsys_glm (finetuning), sasrec, gru4rec: epoch ceiling; default 50 (sasrec, gru4rec: "
                         "300, RecBole's; early stopping ends the run). "
                         "Not for lancer, which trains in stages: --knowledge-epochs, --stage1-epochs, --stage2-epochs")
    tr.add_argument("--max-steps", type=MAX_STEPS, default=-1,
                    help="smoke runs: training steps (genrec: finetuning; lancer, recsys_glm: per stage); -1 = no limit")
    tr.add_argument("--learning-rate", type=POSITIVE_FLOAT, default=None, help="default: the method's (see the training configs)")
    tr.add_argument("--batch-size", type=POSITIVE_INT, default=None)
    tr.add_argument("--max-items", type=POSITIVE_INT, default=None,
                    help="history window in items (default 50; lancer 10, the paper's; recsys_glm 20)")
    tr.add_argument("--max-item-tokens", type=POSITIVE_INT, default=32, help="st2si, lancer, recsys_glm: tokens per item text (paper: 32)")
    tr.add_argument("--windows", type=_windows, default=None,
                    help="st2si: training windows per user and epoch: random (a fresh seeded (start, target) span per epoch, "
                         "as the official code; default) | last (the newest window only) | all (every transition once) | "
                         "N (the newest N); lancer: random (a random target position per user and epoch; default) | last; "
                         "sasrec, gru4rec: all (default) | random | last | N")
    tr.add_argument("--seed", type=SEED, default=42)
    tr.add_argument("--early-stopping-patience", type=NON_NEGATIVE_INT, default=None,
                    help="validations without improvement of NDCG@10 before training (lancer: a stage) stops "
                         "(default 5, the ST2SI paper's; sasrec, gru4rec: 10, RecBole's stopping_step; 0 = off)")
    tr.add_argument("--limit-users", type=POSITIVE_INT, default=None, help="smoke runs: first N users only")
    tr.add_argument("--skip-test", action="store_true", help="do not evaluate on test after training")
    tr.add_argument("--no-progress", action="store_true")
    st = tr.add_argument_group("st2si")
    st.add_argument("--tune-mode", default="ilp", choices=("ilp", "full", "top-k"),
                    help="ilp: only the item projection trains (default); full: everything (the paper's best, needs a GPU); "
                         "top-k: the top --tune-layers layers + the projection, the frozen lower layers computed once")
    st.add_argument("--tune-layers", type=POSITIVE_INT, default=None, help="--tune-mode top-k: layers that train (default 2)")
    st.add_argument("--single-query", action="store_true", help="ablation: one query token at the end (w/o multi-query)")
    st.add_argument("--no-alignment", action="store_true", help="ablation: no ID-alignment instructions")
    st.add_argument("--no-cache", action="store_true", help="ILP mode: recompute backbone states every step")
    st.add_argument("--max-train-minutes", type=POSITIVE_FLOAT, default=None,
                    help="stop at the first validation after this many minutes of training (the best model is still "
                         "reloaded, saved and tested)")
    gr = tr.add_argument_group("genrec")
    gr.add_argument("--pretrain-epochs", type=NON_NEGATIVE_FLOAT, default=None,
                    help="genrec: masked-item pretraining epochs (default 5; 0 = ablation); recsys_glm: blank-infilling "
                         "pretraining epochs (default 8, the paper's; 0 skips it)")
    gr.add_argument("--pretrain-max-steps", type=MAX_STEPS, default=-1)
    gr.add_argument("--finetune-targets", default=None, choices=("last", "random"),
                    help="genrec (default last), recsys_glm (default random): the training item each finetuning row "
                         "predicts, the last one or a random position drawn every epoch")
    gr.add_argument("--item-text-ids", default="random", choices=("random", "original"),
                    help="numbers in item_<n>: a seeded permutation, or the dataset's ids (may leak)")
    gr.add_argument("--unknown-user-prob", type=PROBABILITY, default=0.1,
                    help="share of training rows shown as the unknown user, so histories without a user work (0 = the paper)")
    gr.add_argument("--beam-size", type=POSITIVE_INT, default=None,
                    help="genrec, lancer, recsys_glm: beams for validation, test and the saved checkpoint; the list length "
                         "of the test evaluation (default: genrec 20, lancer 10, the papers'; recsys_glm 20)")
    gr.add_argument("--id-embedding-scale", type=POSITIVE_FLOAT, default=1.0,
                    help="factor on the added user/item ID embedding (1.0 = eq. 2 as written; the public code uses 1/sqrt(d_model))")
    gr.add_argument("--eval-every", type=POSITIVE_FLOAT, default=1.0, help="finetuning epochs between validations (default 1)")
    la = tr.add_argument_group("lancer", "knowledge stage (knowledge prompt on the catalog's detail texts, LM frozen), "
                                          "stage 1 (both prompts, LM frozen), optional stage 2 (prompts + LM), each "
                                          "selected on validation NDCG@10; stage 2 is kept only if it beats stage 1")
    la.add_argument("--knowledge-epochs", type=NON_NEGATIVE_FLOAT, default=None, help="knowledge-stage epochs (default 3; 0 skips it)")
    la.add_argument("--stage1-epochs", type=POSITIVE_FLOAT, default=None, help="stage 1 epoch ceiling (default 5, the public code's)")
    la.add_argument("--stage2", default=None, choices=("none", "full", "lora"),
                    help="stage 2: none (default) | full (the paper: the whole LM) | lora")
    la.add_argument("--stage2-epochs", type=POSITIVE_FLOAT, default=None, help="stage 2 epoch ceiling (default 20, the paper's)")
    la.add_argument("--stage2-learning-rate", type=POSITIVE_FLOAT, default=None, help="default: --learning-rate (2e-4)")
    la.add_argument("--lora-r", type=POSITIVE_INT, default=None, help="--stage2 lora: rank (default 8)")
    la.add_argument("--lora-alpha", type=POSITIVE_INT, default=None, help="--stage2 lora: alpha (default 16)")
    la.add_argument("--variant", default=None, choices=("full", "title", "id", "bare"),
                    help="Table 3: full (default; detail texts title, year, genres) | title | id (item_<n> texts) | "
                         "bare (no prompts, no instruction: needs --stage2 full or lora)")
    la.add_argument("--decode", default=None, choices=DECODE_MODES,
                    help="generated text -> item: cosine (default; the paper's eq. 12) | trie (beams kept on the catalog); "
                         "used for validation and test and saved as the checkpoint's default")
    la.add_argument("--eval-users", type=POSITIVE_INT, default=None,
                    help="lancer, recsys_glm: validation users per evaluation, a fixed seeded subset (default: all; beam "
                         "search is slow on CPU)")
    la.add_argument("--num-knowledge-tokens", type=POSITIVE_INT, default=None, help="knowledge prompt length (default 20)")
    la.add_argument("--prompt-hidden-size", type=POSITIVE_INT, default=None, help="prompt MLPs' hidden width (default 512)")
    la.add_argument("--lm-layers", type=POSITIVE_INT, default=None,
                    help="lancer, recsys_glm: keep only the LM's first N blocks (a CPU budget setting; default: all)")
    la.add_argument("--init-from", default=None,
                    help="continue a saved LANCER checkpoint folder (more stage-1 epochs, or stage 2 on it); skips the knowledge stage")
    la.add_argument("--loss-on", default=None, choices=("items", "target"),
                    help="items (default; every item's tokens, eq. 2) | target (the predicted item's only)")
    la.add_argument("--prompt-visibility", default=None, choices=("all", "causal"),
                    help="reasoning-prompt slots a training token attends: all (default; a plain prefix) | causal "
                         "(slot j once item j is read, so no item is predicted from its own vector)")
    rg = tr.add_argument_group("recsys_glm", "blank-infilling pretraining ([MASK] / [sMASK] / [gMASK] on behaviour "
                                              "windows, --pretrain-epochs), then next-item fine-tuning (--epochs) selected "
                                              "on validation NDCG@10 (trie-constrained beam search, --beam-size beams)")
    rg.add_argument("--lora-rank", type=NON_NEGATIVE_INT, default=None,
                    help="LoRA rank (the paper: 8); 0 = full fine-tuning. Default: 8 for a pretrained backbone "
                         "(smollm2-135m, a folder), 0 for a random-init one (glm-tiny, glm-small, tiny)")
    rg.add_argument("--keep-lora", action="store_const", const=True, default=None,
                    help="save the LoRA adapters unmerged (loading then needs peft); default: merged into the weights")
    rg.add_argument("--no-dynamic-positions", dest="dynamic_positions", action="store_const", const=False, default=None,
                    help="ablation: plain GLM positions (1..n over each span) instead of the paper's trie-driven ones")
    rg.add_argument("--tasks", type=_task_weights, default=None,
                    help="multi-task fine-tuning: family=weight,... over rating, sequential, direct, explanation, "
                         "summary (e.g. rating=1,sequential=2,direct=1), each on its seen templates; validation stays "
                         "next-item. Default: next-item fine-tuning only")
    rg.add_argument("--user-features", type=lambda text: [f.strip() for f in text.split(",") if f.strip()], default=None,
                    help="user fields written before the behaviour (the paper's textualised features), e.g. "
                         "age,gender,occupation from ml-100k's user table; default: behaviour only")
    tr.set_defaults(func=cmd_train)

    rec = sub.add_parser("recommend", help="top-k items for a user of the checkpoint's dataset (unseen items by default)")
    rec.add_argument("checkpoint")
    rec.add_argument("--user", default=None, help="original user id")
    rec.add_argument("--items", default=None, help="or a history: comma-separated original item ids, oldest first")
    rec.add_argument("--top-k", type=POSITIVE_INT, default=10)
    _add_generation_args(rec)
    seen = rec.add_mutually_exclusive_group()
    seen.add_argument("--include-history", action="store_true", help="also recommend items the user has already seen")
    seen.add_argument("--exclude-history", dest="include_history", action="store_false",
                      help="never recommend already seen items (the default)")
    _add_dataset_args(rec)
    rec.set_defaults(func=cmd_recommend)

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint or a baseline under the shared protocol")
    ev.add_argument("checkpoint", nargs="?", default=None, help="checkpoint folder")
    ev.add_argument("--method", default=None, help="baseline to evaluate instead of a checkpoint: popularity")
    _add_dataset_args(ev)
    ev.add_argument("--split", default="test", choices=("valid", "test"))
    ev.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    ev.add_argument("--max-history", type=POSITIVE_INT, default=None)
    ev.add_argument("--limit-users", type=POSITIVE_INT, default=None, help="smoke runs: the split's first N users only (reported)")
    ev.add_argument("--exclude-history", action="store_true", help="never recommend already seen items")
    ev.add_argument("--top-k", type=POSITIVE_INT, default=None,
                    help="ranked-list length for generative models (default 20; LANCER: its beam count, 10 in the paper)")
    _add_generation_args(ev)
    ev.add_argument("--unconstrained", action="store_true", help="GenRec, RecSysGLM: decode without the catalog trie")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser("benchmark", help="train and evaluate methods over seeds under a named preset; write "
                                              "RESULTS-DIR/<dataset>.json, .md (table) and .png (figure)")
    _add_dataset_args(bench)
    bench.add_argument("--methods", default=None,
                       help="comma-separated: popularity and train methods (default: every method of the preset); "
                            "unknown ones and ones the preset lacks are skipped with a message")
    bench.add_argument("--preset", default="cpu", help="tiny (tests) | cpu (a 2-core machine) | paper (needs a GPU); "
                                                        "the flags: genrec_hf/benchmark.py PRESETS (default: cpu)")
    seeds = bench.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=POSITIVE_INT, default=3, help="seeds 0..N-1 (default 3)")
    seeds.add_argument("--seed-list", default=None, help="or the seeds themselves, e.g. 1,2,3")
    bench.add_argument("--results-dir", default="benchmarks/results", help="default: benchmarks/results")
    bench.add_argument("--runs-dir", default="runs/benchmark",
                       help="checkpoints and logs: RUNS-DIR/<dataset>/<preset>/<method>-seed<s> (default: runs/benchmark)")
    bench.add_argument("--results-md", default=None,
                       help="also write the table and figure link into this markdown file, in a marked block "
                            "replaced on every run (e.g. benchmarks/RESULTS.md)")
    bench.add_argument("--extra-train-flags", default=None,
                       help="appended to every train run's flags (recorded), e.g. --extra-train-flags='--batch-size 64'")
    bench.set_defaults(func=cmd_benchmark)

    up = sub.add_parser("upload", help="check a checkpoint folder, render its card and push it to the Hub",
                        description="Credentials come from HF_TOKEN or `hf auth login`; none is taken here.")
    up.add_argument("checkpoint")
    up.add_argument("--repo-id", required=True, help="user-or-org/name")
    up.add_argument("--private", action="store_true")
    up.add_argument("--revision", default=None, help="branch to push to (default: main)")
    up.add_argument("--commit-message", default=None)
    up.add_argument("--dry-run", action="store_true", help="check and list what would be pushed; push nothing")
    up.set_defaults(func=cmd_upload)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, OSError) as err:
        # bad input: the message names the file, id or flag and what to do
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {_one_line(msg)}", file=sys.stderr)
        return 2
    except Exception as err:  # a failure without a prepared message: still one line, traceback on request
        print(f"error: {type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 2


def _one_line(message) -> str:
    return " ".join(str(message).split())


if __name__ == "__main__":
    sys.exit(main())
