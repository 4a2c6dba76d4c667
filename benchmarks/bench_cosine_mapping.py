"""LANCER's cosine item mapping: build time of the item vectors and mapping throughput.

A random input-embedding matrix of SmolLM2-135M's size (vocab 49152, d 576), catalogs of random
32-token item texts, and batches of generated beams (10 beams x 64 users, 32 generated tokens,
a two-token separator at a random position in most beams). Measures (a) `CosineItemMapper`
construction (max pooling every item, normalising, grouping identical vectors) and (b) `map`
(top-1) and `top_items` (top-10) throughput in beams/s, median of --repeats after one warm-up.

    python benchmarks/bench_cosine_mapping.py --items 1000 100000 --threads 2
"""

import argparse
import json
import statistics
import time

import torch

from genrec_hf.generation import CosineItemMapper

SEPARATOR = [1424, 2708]  # arbitrary ids standing in for " ->"
EOS = 0


def generated_beams(num: int, length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    beams = torch.randint(1, vocab, (num, length), generator=generator)
    # the separator at a random position in 3/4 of the beams (position length - 1: cut off, no stop)
    at = torch.randint(0, length - 1, (num,), generator=generator)
    has = torch.rand(num, generator=generator) < 0.75
    rows = torch.arange(num)[has]
    beams[rows, at[has]] = SEPARATOR[0]
    beams[rows, at[has] + 1] = SEPARATOR[1]
    return beams


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--item-length", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--generated-length", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the embedding weight's dtype")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(args.vocab, args.dim, generator=gen).to(getattr(torch, args.dtype)).to(args.device)
    num_beams = args.beams * args.users
    beams = generated_beams(num_beams, args.generated_length, args.vocab, gen).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    rows = []
    for num_items in args.items:
        table = torch.randint(1, args.vocab, (num_items, args.item_length), generator=gen).to(args.device)
        start = time.perf_counter()
        mapper = CosineItemMapper(table, weight, [SEPARATOR, [EOS]])
        sync()
        build_s = time.perf_counter() - start
        with torch.inference_mode():
            map_s = median_seconds(lambda: (mapper.map(beams), sync()), args.repeats)
            top_s = median_seconds(lambda: (mapper.top_items(beams, args.top_k), sync()), args.repeats)
            pool_s = median_seconds(lambda: (mapper.sequence_vectors(beams), sync()), args.repeats)
            mapped = (mapper.map(beams)[0] >= 0).float().mean().item()
        row = {
            "items": num_items, "item_len": args.item_length, "vocab": args.vocab, "dim": args.dim, "dtype": args.dtype,
            "device": args.device, "threads": args.threads, "beams_per_batch": num_beams,
            "build_s": round(build_s, 3), "pool_ms": round(pool_s * 1e3, 2), "map_ms": round(map_s * 1e3, 2),
            "map_beams_per_s": round(num_beams / map_s), f"top{args.top_k}_ms": round(top_s * 1e3, 2),
            f"top{args.top_k}_beams_per_s": round(num_beams / top_s), "mapped_fraction": round(mapped, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = ["items", "build_s", "pool_ms", "map_ms", "map_beams_per_s", f"top{args.top_k}_ms", f"top{args.top_k}_beams_per_s"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
