"""Data-parallel runs on CPU (gloo, 2 processes) give the single-process result (issue 13).

Training: the unchanged `genrec-hf train` under `torchrun` and `accelerate launch`, with the same
global batch as a one-process run, ends with the same weights (max |difference| <= 1e-6; seen:
<= 7e-8, the order of float32 sums), the same validation history (so the same best checkpoint) and
the same test metrics. Two conditions make "the same" exact, and the runs here meet both:
- no dropout (each rank draws its own masks): the tiny Llama has none; GenRec gets a BART with
  dropout 0 from a folder;
- the global batch divides the training rows: accelerate fills a rank's short last batch with the
  epoch's first rows (even_batches), which a single process never sees twice.
Evaluation: users are sharded over the ranks and their ranks gathered, so every rank reports the
single-process metrics.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import write_p5_sequences
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# accelerate's --cpu flag launches ONE process whatever --num_processes says; --multi_gpu starts the
# processes through torch.distributed, and on a machine without CUDA they train on CPU over gloo
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_p5_sequences(tmp_path_factory.mktemp("data") / "sequences.txt", num_users=64, length=8)


def train(launcher, dataset, output_dir, *flags):
    cmd = [*launcher, "-m", "genrec_hf.cli", "train", "--dataset", str(dataset), "--format", "p5", "--k-core", "0",
           "--max-items", "5", "--seed", "3", "--no-progress", "--output-dir", str(output_dir), *flags]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    return done


def assert_same_run(one, two, tolerance=1e-6):
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((float((a[name].double() - b[name].double()).abs().max()), name) for name in a)
    assert worst[0] <= tolerance, f"{worst[1]} differs by {worst[0]:.3g} (tolerance {tolerance:g})"
    info_a, info_b = (json.loads((d / "training_info.json").read_text()) for d in (one, two))
    history_a, history_b = info_a["validation_history"], info_b["validation_history"]
    assert len(history_a) == len(history_b) >= 2  # one entry per epoch (GenRec: the loss and the ranking)
    for epoch_a, epoch_b in zip(history_a, history_b):
        assert epoch_a.keys() == epoch_b.keys()
        for key in epoch_a.keys() - {"loss"}:  # the Trainer's running training-loss report is not selection
            assert epoch_a[key] == pytest.approx(epoch_b[key], abs=tolerance), key
    assert info_a["best_checkpoint"] == info_b["best_checkpoint"]
    assert info_a["test"] == pytest.approx(info_b["test"], abs=1e-9)  # gathered over the ranks: every user once
    assert info_a["test"]["users"] == 64


@pytest.mark.parametrize("tune_mode,windows,batch_size,launcher", [
    ("ilp", "2", 24, "accelerate"),  # 360 rows (2 windows per user + ID alignment): 24 divides them
    ("full", "2", 24, "torchrun"),
    ("ilp", "random", 8, "torchrun"),  # one window per user and epoch, drawn by (seed, row, epoch): 104 rows
])
def test_st2si_two_processes_reach_the_single_process_weights(dataset, tmp_path, tune_mode, windows, batch_size, launcher):
    # ilp: query states through the ILP alone (cached per window, or computed per drawn window);
    # full: the text through the whole backbone
    flags = ["--method", "st2si", "--backbone", "tiny", "--windows", windows, "--tune-mode", tune_mode, "--epochs", "2"]
    train([sys.executable], dataset, tmp_path / "one", *flags, "--batch-size", str(batch_size))
    two = train(TORCHRUN if launcher == "torchrun" else ACCELERATE, dataset, tmp_path / "two", *flags,
                "--batch-size", str(batch_size // 2))
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert two.stdout.count("checkpoint saved to") == 1  # one rank reports and writes


def test_genrec_two_processes_reach_the_single_process_weights(dataset, tmp_path):
    from genrec_hf.backbones import load_bart
    from genrec_hf.data import load_sequences
    from genrec_hf.training.genrec import genrec_entity_texts

    # a tiny BART without dropout, with the tokenizer the recipe would train, as a local backbone folder
    bart, tokenizer = load_bart("tiny", texts=genrec_entity_texts(load_sequences(str(dataset), format="p5", k_core=0)))
    for key in ("dropout", "attention_dropout", "activation_dropout", "classifier_dropout"):
        setattr(bart.config, key, 0.0)
    bart.save_pretrained(tmp_path / "bart")
    tokenizer.save_pretrained(tmp_path / "bart")
    # finetuning only, with the paper's fixed targets and no unknown-user rows: no per-rank random
    # draws (64 rows, global batch 16); validation by beam search, sharded over the ranks
    flags = ["--method", "genrec", "--backbone", str(tmp_path / "bart"), "--pretrain-epochs", "0",
             "--finetune-targets", "last", "--unknown-user-prob", "0", "--beam-size", "5", "--epochs", "2"]
    train([sys.executable], dataset, tmp_path / "one", *flags, "--batch-size", "16")
    train(TORCHRUN, dataset, tmp_path / "two", *flags, "--batch-size", "8")
    # a deeper model: Adam's per-coordinate normalisation lifts float32 summation-order noise of rarely
    # updated rows (BART's position embeddings) to ~1e-5 (seen: 6e-6)
    assert_same_run(tmp_path / "one", tmp_path / "two", tolerance=5e-5)


@pytest.mark.parametrize("flags", [
    ["--method", "lancer", "--knowledge-epochs", "1", "--stage1-epochs", "1", "--stage2", "lora", "--stage2-epochs", "1",
     "--eval-users", "16", "--beam-size", "5"],
    ["--method", "recsys_glm", "--pretrain-epochs", "1", "--epochs", "1", "--eval-users", "16", "--beam-size", "5"],
    ["--method", "gru4rec", "--epochs", "2"],
], ids=["lancer", "recsys_glm", "gru4rec"])
def test_methods_with_random_draws_train_under_torchrun(dataset, tmp_path, flags):
    # their collators draw windows / spans per rank, and the GLM and GRU4Rec have dropout, so the weights
    # are not the single-process ones; what must hold: every stage runs, one rank writes one complete
    # checkpoint (LANCER's stage-2 swap included), and the recorded test metrics are the saved model's
    out = tmp_path / "two"
    done = train(TORCHRUN, dataset, out, *flags, "--batch-size", "8")
    assert done.stdout.count("checkpoint saved to") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # no staging, stage-2 or work folder left
    assert not (out / "trainer_checkpoints").exists()
    recorded = json.loads((out / "training_info.json").read_text())["test"]
    top_k = ["--top-k", "5"] if "--beam-size" in flags else []
    again = subprocess.run([sys.executable, "-m", "genrec_hf.cli", "evaluate", str(out), "--split", "test", "--json", *top_k,
                            "--no-progress"], env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    single = json.loads(again.stdout.strip().splitlines()[-1])["metrics"]
    assert {k: v for k, v in recorded.items() if k != "users"} == pytest.approx(single, abs=1e-9)
    assert recorded["users"] == 64


SHARDED_EVALUATION = r"""
import json, sys
import torch
import torch.distributed as dist
from genrec_hf.evaluation import evaluate_recommender
sys.path.insert(0, sys.argv[2])
from recommenders import SPLIT, ListRecommender, TiedScores

dist.init_process_group("gloo")
out = {}
for name, recommender in (("scores", TiedScores()), ("lists", ListRecommender())):
    result = evaluate_recommender(recommender, SPLIT, batch_size=4, exclude_history=True, progress=False)
    out[name] = {"result": result.to_dict(), "seen": recommender.seen}
with open(f"{sys.argv[1]}/rank{dist.get_rank()}.json", "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""

RECOMMENDERS = r"""
import torch
from genrec_hf.outputs import RecommendationOutput

NUM_ITEMS, NUM_USERS = 30, 37  # 37 users over 2 ranks: shards of 19 and 18
g = torch.Generator().manual_seed(0)
SPLIT = {
    "user": [f"u{u}" for u in range(NUM_USERS)],
    "history": [torch.randint(0, NUM_ITEMS, (1 + u % 5,), generator=g).tolist() for u in range(NUM_USERS)],
    "target": torch.randint(0, NUM_ITEMS, (NUM_USERS,), generator=g).tolist(),
}


class TiedScores:
    "Integer scores, many ties: ranks are pessimistic."
    def __init__(self):
        self.seen = []

    def score_items(self, histories, users):
        self.seen += list(users)
        rows = [torch.Generator().manual_seed(int(u[1:])) for u in users]
        return torch.stack([torch.randint(0, 4, (NUM_ITEMS,), generator=r).float() for r in rows])


class ListRecommender:
    "Ranked lists with padding and a valid ratio below 1."
    def __init__(self):
        self.seen = []

    def rank_items(self, histories, users, top_k, exclude_history):
        self.seen += list(users)
        ids = torch.stack([torch.randperm(NUM_ITEMS, generator=torch.Generator().manual_seed(int(u[1:])))[:top_k] for u in users])
        ids[:, -3:] = -1
        return RecommendationOutput(item_ids=ids, scores=torch.zeros(ids.shape), num_valid=torch.full((len(users),), 7),
                                    num_generated=torch.full((len(users),), 10))
"""


def test_sharded_evaluation_gives_the_single_process_metrics(tmp_path):
    from genrec_hf.evaluation import evaluate_recommender

    (tmp_path / "recommenders.py").write_text(RECOMMENDERS)
    (tmp_path / "check.py").write_text(SHARDED_EVALUATION)
    done = subprocess.run([*TORCHRUN, str(tmp_path / "check.py"), str(tmp_path), str(tmp_path)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    sys.path.insert(0, str(tmp_path))
    try:
        import recommenders
    finally:
        sys.path.remove(str(tmp_path))
    for name, recommender in (("scores", recommenders.TiedScores()), ("lists", recommenders.ListRecommender())):
        single = evaluate_recommender(recommender, recommenders.SPLIT, batch_size=4, exclude_history=True, progress=False)
        for rank in ranks:
            assert rank[name]["result"] == json.loads(json.dumps(single.to_dict()))  # every rank: the whole split
        # each user scored once, by one rank, in contiguous shards of 19 and 18
        assert ranks[0][name]["seen"] == recommenders.SPLIT["user"][:19]
        assert ranks[1][name]["seen"] == recommenders.SPLIT["user"][19:]
    assert single.valid_ratio == pytest.approx(0.7)


def test_shard_bounds_cover_every_row_once():
    from genrec_hf.distributed import shard_bounds

    for rows in range(0, 12):
        for size in range(1, 5):
            bounds = [shard_bounds(rows, r, size) for r in range(size)]
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(rows))
            assert max(stop - start for start, stop in bounds) - min(stop - start for start, stop in bounds) <= 1
