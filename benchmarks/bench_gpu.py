"""`recommend()` on a GPU: users/s and peak GPU memory per method, batch size and dtype (fp32, bf16),
and ST2SI's batch-1 latency and large-batch throughput next to the paper's "0.02 s per instance,
0.97 GB" (opt-125m, one V100; st2si.md, inference-cost table).

The models are those of benchmarks/bench_recommend.py (random weights in the CPU preset's shapes; the
tokenizer is SmolLM2's, saved once with `--tokenizer-dir`), plus an ST2SI on an OPT-125m-shaped
backbone, the paper's. Random weights decode like trained ones for the scoring methods (one forward
pass); the generative ones decode with their default beams, and LANCER's free text runs to its token
limit (see bench_recommend.py). Each timing: one warm-up call, then the median of `--repeats` calls,
each ended by `torch.cuda.synchronize()`. Peak memory: `torch.cuda.max_memory_allocated` over the timed
calls, after a reset, minus nothing (weights included), so it compares with the paper's figure.

    python benchmarks/bench_gpu.py --tokenizer-dir smollm2-tokenizer --output gpu.json
"""

import argparse
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

METHODS = ("sasrec", "gru4rec", "st2si", "st2si-opt125m", "genrec", "lancer", "recsys_glm")
TOP_K = 10


def build(method: str, data, tokenizer_dir: str):
    from bench_recommend import build_recommender

    if method != "st2si-opt125m":
        return build_recommender(method, data, tokenizer_dir)
    from transformers import AutoModel, AutoTokenizer, OPTConfig

    from genrec_hf import SeqRecPipeline, SeqRecProcessor, ST2SIForItemPrediction

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = SeqRecProcessor(tokenizer, data.catalog, method="st2si", max_items=20, max_item_tokens=32,
                                multi_query=True, max_length=2048)
    config = OPTConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # opt-125m's sizes
    model = ST2SIForItemPrediction.from_backbone(
        AutoModel.from_config(config), num_items=len(data.catalog), query_token_id=processor.query_token_id,
        vocab_size=len(tokenizer), tune_mode="ilp", max_items=20, max_item_tokens=32)
    return SeqRecPipeline(model, processor)


def measure(recommender, histories, users, repeats: int) -> dict:
    import torch

    cuda = recommender.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    call = lambda: recommender.recommend(histories, top_k=TOP_K, exclude_history=True, users=users)  # noqa: E731
    with torch.inference_mode():
        call()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            sync()
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"median_s": round(median, 5), "users_per_s": round(len(histories) / median, 1),
            "ms_per_user": round(1000 * median / len(histories), 3),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--large-batches", type=int, nargs="*", default=[256, 943],
                        help="extra batch sizes for the ST2SI models (943: every ml-100k test user)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokenizer-dir", required=True, help="SmolLM2's tokenizer, saved with save_pretrained")
    parser.add_argument("--device", default="cuda", help="cpu only to check the script itself")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import torch

    from genrec_hf import load_sequences

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    torch.manual_seed(0)
    data = load_sequences("ml-100k")
    test = data.splits["test"]
    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device, "torch": torch.__version__, "rows": []}
    for method in args.methods:
        try:
            recommender = build(method, data, args.tokenizer_dir)
        except Exception:  # one method's failure should not lose the others' numbers
            results["rows"].append({"method": method, "error": traceback.format_exc(limit=3)})
            continue
        batches = args.batch_sizes + (args.large_batches if method.startswith("st2si") else [])
        for dtype in args.dtypes:
            recommender.model.to(args.device, getattr(torch, dtype))
            recommender.device = torch.device(args.device)
            for batch in batches:
                row = {"method": method, "dtype": dtype, "batch": batch}
                try:
                    row.update(measure(recommender, test["history"][:batch], test["user"][:batch], args.repeats))
                except Exception:
                    row["error"] = traceback.format_exc(limit=3)
                print(json.dumps(row), flush=True)
                results["rows"].append(row)
                if args.output:  # after every row: a run stopped at its limit keeps what it measured
                    with open(args.output, "w") as f:
                        json.dump(results, f, indent=1)
        del recommender
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
