"""Constrained beam search: vectorised trie LogitsProcessor vs HF's prefix_allowed_tokens_fn.

Catalogs of 1k / 10k / 100k items written as GenRec writes them (`item_<n>`, tokenized by a
BPE trained on those texts), a tiny random BART so the constraint's own cost is visible, and
the same `generate` call three ways: unconstrained, our trie processor, and the Python
callback over a dict trie (the correctness oracle in tests). Both constrained runs must return
the same beams; the script checks that too. The variants are timed in turn, `--repeats` rounds,
and each reports its median; the constraint's overhead is `(trie - unconstrained) / unconstrained`
(it also moves the number of decoding steps: constrained beams of equal length end together), and
the processor's own time per `generate` call is reported too, as a share of the unconstrained time.

    python benchmarks/bench_trie.py --items 1000 10000 100000 --beams 10 20 --output trie.json

`--baseline-trie FILE` also times the processor of another trie.py (e.g. the last commit's:
`git show HEAD:genrec_hf/generation/trie.py > /tmp/trie_old.py`) in the same rounds.
"""

import argparse
import importlib.util
import json
import os
import statistics
import time

import torch
import transformers
from transformers import BartConfig, BartForConditionalGeneration, LogitsProcessor, LogitsProcessorList

from genrec_hf.backbones import train_tokenizer
from genrec_hf.generation import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, prefix_allowed_tokens_oracle


def catalog_table(num_items: int, tokenizer) -> torch.Tensor:
    rows = tokenizer([f" item_{n}" for n in range(num_items)], add_special_tokens=False)["input_ids"]
    rows = [r + [tokenizer.eos_token_id] for r in rows]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows])


def timed_rounds(variants: dict, repeats: int) -> tuple[dict, dict]:
    """Median seconds of each variant (warm-up once, then `repeats` rounds taking turns, each round
    starting one variant later, so that none always runs first) and its last output."""
    outputs = {name: fn() for name, fn in variants.items()}  # warm-up
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            outputs[name] = variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


class TimedProcessor(LogitsProcessor):
    """A logits processor that adds the seconds spent inside it to `seconds`."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("baseline_trie", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-trie", default=None, help="another trie.py whose processor is timed beside this one")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    baseline = load_module(args.baseline_trie) if args.baseline_trie else None
    results = []
    for num_items in args.items:
        tokenizer = train_tokenizer([f"item_{n}" for n in range(num_items)], vocab_size=4000)
        table = catalog_table(num_items, tokenizer)
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        config = BartConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                            decoder_ffn_dim=128, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=None)
        model = BartForConditionalGeneration(config).eval().to(device)
        inputs = torch.randint(5, len(tokenizer), (args.batch, 64), device=device)
        start = time.perf_counter()
        trie = TokenTrie(table, len(tokenizer)).to(device)
        build_s = time.perf_counter() - start
        old_trie = baseline.TokenTrie(table, len(tokenizer)).to(device) if baseline is not None else None
        for beams in args.beams:
            common = dict(input_ids=inputs, num_beams=beams, num_return_sequences=beams, max_new_tokens=table.shape[1],
                          do_sample=False, **ITEM_BEAM_SEARCH, output_scores=True,
                          return_dict_in_generate=True, eos_token_id=eos, pad_token_id=pad, decoder_start_token_id=eos)
            oracle = prefix_allowed_tokens_oracle(table, prefix_length=1, eos_token_id=eos)
            timers = {"trie": TimedProcessor(TrieConstrainedLogitsProcessor(trie, prefix_length=1, eos_token_id=eos))}
            if baseline is not None:
                timers["baseline_trie"] = TimedProcessor(baseline.TrieConstrainedLogitsProcessor(old_trie, 1, eos))
            processor_s = {name: [] for name in timers}

            def constrained(name):
                timers[name].seconds = 0.0
                out = model.generate(**common, logits_processor=LogitsProcessorList([timers[name]]))
                processor_s[name].append(timers[name].seconds)
                return out

            variants = {
                "unconstrained": lambda: model.generate(**common),
                **{name: (lambda name=name: constrained(name)) for name in timers},
                "callback": lambda: model.generate(**common, prefix_allowed_tokens_fn=oracle),
            }
            with torch.inference_mode():
                seconds, outputs = timed_rounds(variants, args.repeats)
            free = seconds["unconstrained"]
            row = {
                "items": num_items, "trie_nodes": trie.num_nodes, "item_tokens": table.shape[1], "beams": beams,
                "batch": args.batch, "device": device, "trie_build_s": round(build_s, 3),
                **{f"{name}_s": round(s, 4) for name, s in seconds.items()},
                **{f"{name}_steps": len(outputs[name].scores) for name in ("unconstrained", "trie")},
                "trie_overhead_pct": round(100 * (seconds["trie"] - free) / free, 1),
                "trie_processor_pct": round(100 * statistics.median(processor_s["trie"]) / free, 1),
                "callback_overhead_pct": round(100 * (seconds["callback"] - free) / free, 1),
                "trie_speedup_over_callback": round(seconds["callback"] / seconds["trie"], 2),
                "same_beams": torch.equal(outputs["trie"].sequences, outputs["callback"].sequences),
            }
            if baseline is not None:
                row["baseline_trie_overhead_pct"] = round(100 * (seconds["baseline_trie"] - free) / free, 1)
                row["baseline_trie_processor_pct"] = round(100 * statistics.median(processor_s["baseline_trie"]) / free, 1)
                row["baseline_same_beams"] = torch.equal(outputs["baseline_trie"].sequences, outputs["trie"].sequences)
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| items | beams | unconstrained s (steps) | trie s (steps) | trie overhead | trie processor | "
          "callback s | callback overhead | same beams |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['items']} | {r['beams']} | {r['unconstrained_s']} ({r['unconstrained_steps']}) | {r['trie_s']} "
              f"({r['trie_steps']}) | {r['trie_overhead_pct']:+.1f}% | {r['trie_processor_pct']:.1f}% | {r['callback_s']} | "
              f"{r['callback_overhead_pct']:+.1f}% | {r['same_beams']} |")
    if baseline is not None:
        print(f"\nbaseline trie ({args.baseline_trie}):")
        for r in results:
            print(f"  {r['items']} items, {r['beams']} beams: {r['baseline_trie_s']} s, "
                  f"overhead {r['baseline_trie_overhead_pct']:+.1f}%, "
                  f"processor {r['baseline_trie_processor_pct']:.1f}%, same beams {r['baseline_same_beams']}")
    if not all(r["same_beams"] for r in results):
        raise SystemExit("the trie processor and the callback returned different beams")
    if args.output:
        machine = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
                   "torch": torch.__version__, "transformers": transformers.__version__}
        with open(args.output, "w") as f:
            json.dump({"machine": machine, "repeats": args.repeats, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
