"""Constrained beam search: vectorised trie LogitsProcessor vs HF's prefix_allowed_tokens_fn.

Catalogs of 1k / 10k / 100k items written as GenRec writes them (`item_<n>`, tokenized by a
BPE trained on those texts), a tiny random BART so the constraint's own cost is visible, and
the same `generate` call three ways: unconstrained, our trie processor, and the Python
callback over a dict trie (the correctness oracle in tests). Both constrained runs return the
same beams; the script checks that too.

    python benchmarks/bench_trie.py --items 1000 10000 100000 --beams 10 20
"""

import argparse
import json
import time

import torch
from transformers import BartConfig, BartForConditionalGeneration, LogitsProcessorList

from genrec_hf.backbones import train_tokenizer
from genrec_hf.generation import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, prefix_allowed_tokens_oracle


def catalog_table(num_items: int, tokenizer) -> torch.Tensor:
    rows = tokenizer([f" item_{n}" for n in range(num_items)], add_special_tokens=False)["input_ids"]
    rows = [r + [tokenizer.eos_token_id] for r in rows]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows])


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
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
        for beams in args.beams:
            common = dict(input_ids=inputs, num_beams=beams, num_return_sequences=beams, max_new_tokens=table.shape[1],
                          do_sample=False, **ITEM_BEAM_SEARCH, output_scores=True,
                          return_dict_in_generate=True, eos_token_id=eos, pad_token_id=pad, decoder_start_token_id=eos)
            processor = LogitsProcessorList([TrieConstrainedLogitsProcessor(trie, prefix_length=1, eos_token_id=eos)])
            oracle = prefix_allowed_tokens_oracle(table, prefix_length=1, eos_token_id=eos)
            with torch.inference_mode():
                free_s, _ = timed(lambda: model.generate(**common), args.repeats)
                fast_s, fast = timed(lambda: model.generate(**common, logits_processor=processor), args.repeats)
                slow_s, slow = timed(lambda: model.generate(**common, prefix_allowed_tokens_fn=oracle), args.repeats)
            same = torch.equal(fast.sequences, slow.sequences)
            row = {
                "items": num_items, "trie_nodes": trie.num_nodes, "beams": beams, "batch": args.batch, "device": device,
                "trie_build_s": round(build_s, 3), "unconstrained_s": round(free_s, 4), "vectorised_trie_s": round(fast_s, 4),
                "prefix_allowed_tokens_fn_s": round(slow_s, 4),
                "constraint_overhead_ratio": round((slow_s - free_s) / max(fast_s - free_s, 1e-6), 1),
                "speedup": round(slow_s / fast_s, 2), "same_beams": same,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| items | beams | unconstrained s | vectorised trie s | prefix_allowed_tokens_fn s | speed-up | same beams |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['items']} | {r['beams']} | {r['unconstrained_s']} | {r['vectorised_trie_s']} | "
              f"{r['prefix_allowed_tokens_fn_s']} | {r['speedup']}x | {r['same_beams']} |")


if __name__ == "__main__":
    main()
