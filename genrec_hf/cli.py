"""Command line: `genrec-hf data stats`, `genrec-hf evaluate`, ..."""

from __future__ import annotations

import argparse
import json
import logging
import sys

logger = logging.getLogger("genrec_hf")


def _add_dataset_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("dataset", help="ml-100k (offline) or a path to a dataset file/folder")
    else:
        p.add_argument("--dataset", default="ml-100k", help="ml-100k (offline) or a path (default: ml-100k)")
    p.add_argument("--format", default=None, help="ml-100k | recbole | ml-1m | p5 | amazon | csv (guessed if omitted)")
    p.add_argument("--item-file", default=None, help="item table / Amazon metadata")
    p.add_argument("--k-core", type=int, default=None, help="k-core filter, 0 disables (default: 0 for MovieLens, else 5)")
    p.add_argument("--template", default="title", help="item text template (default: title)")
    p.add_argument("--deduplicate", action="store_true", help="keep the first of repeated (user, item) pairs")
    p.add_argument("--missing-item-text", default="error", choices=("error", "drop", "keep"))


def _load(args):
    from .data import load_sequences

    return load_sequences(
        args.dataset,
        format=args.format,
        k_core=args.k_core,
        item_file=args.item_file,
        template=args.template,
        deduplicate=args.deduplicate,
        missing_item_text=args.missing_item_text,
    )


def format_stats(data) -> str:
    s, r = data.stats(), data.raw_stats
    lines = [
        f"dataset {data.name}       {'raw':>10} {'filtered':>10}",
        f"  users              {r['users']:>10} {s['users']:>10}",
        f"  items              {r['items']:>10} {s['items']:>10}",
        f"  interactions       {r['interactions']:>10} {s['interactions']:>10}",
        f"  avg length         {r['avg_length']:>10.2f} {s['avg_length']:>10.2f}",
    ]
    rep = data.filter_report
    lines.append(
        f"  filter: k_core={rep.get('k_core')}, dropped {rep.get('dropped_users', 0)} users "
        f"({rep.get('dropped_users_below_3', 0)} with < 3 interactions) and {rep.get('dropped_items', 0)} items"
    )
    return "\n".join(lines)


def cmd_data_stats(args) -> int:
    data = _load(args)
    if args.json:
        print(json.dumps({"raw": data.raw_stats, "filtered": data.stats(), "filter": data.filter_report}))
    else:
        print(format_stats(data))
    return 0


def _recommender_for(args, data):
    if args.method == "popularity":
        from .baselines import PopularityRecommender

        return PopularityRecommender.fit(data.splits["train"]["items"], len(data.catalog))
    raise SystemExit(f"error: unknown --method {args.method!r}")


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_recommender

    if args.checkpoint is None and args.method is None:
        raise SystemExit("error: give a CHECKPOINT folder or --method popularity")
    if args.checkpoint is not None:
        raise SystemExit("error: evaluating checkpoints needs a trained method; none is built into this version yet")
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
    )
    if args.json:
        print(json.dumps({"method": args.method, "dataset": data.stats(), **result.to_dict()}))
    else:
        print(format_stats(data))
        print(f"\nmethod {args.method}")
        print(result.format())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrec-hf", description="LLM-based sequential recommenders on HF")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="raw and filtered dataset statistics")
    _add_dataset_args(stats, positional=True)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_data_stats)

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint or a baseline under the shared protocol")
    ev.add_argument("checkpoint", nargs="?", default=None, help="checkpoint folder")
    ev.add_argument("--method", default=None, help="baseline to evaluate instead of a checkpoint: popularity")
    _add_dataset_args(ev)
    ev.add_argument("--split", default="test", choices=("valid", "test"))
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--max-history", type=int, default=None)
    ev.add_argument("--exclude-history", action="store_true", help="never recommend already seen items")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
