import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "red blue green dark light night day star moon sun river city road king queen war love story".split()


def make_catalog(num_items: int = 24):
    from genrec_hf.data import ItemCatalog

    titles = [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} {i}" for i in range(num_items)]
    return ItemCatalog([str(100 + i) for i in range(num_items)], [{"title": t} for t in titles])


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: one thread is faster, and on a shared machine two threads spin against each other.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def catalog():
    return make_catalog()


@pytest.fixture(scope="session")
def tokenizer_factory(catalog):
    from genrec_hf.backbones import train_tokenizer
    from genrec_hf.processing import ST2SI_DEFAULTS

    texts = catalog.texts() + [ST2SI_DEFAULTS["alignment_instruction"]]
    return lambda: train_tokenizer(texts, vocab_size=400)


@pytest.fixture
def st2si_factory(catalog, tokenizer_factory):
    """(model, processor) on a tiny random backbone of the given architecture."""
    from transformers import AutoModel

    from genrec_hf import SeqRecProcessor, ST2SIForItemPrediction
    from genrec_hf.backbones import tiny_config

    def build(model_type="llama", tune_mode="full", **processor_settings):
        torch.manual_seed(0)
        tokenizer = tokenizer_factory()
        processor = SeqRecProcessor(tokenizer, catalog, method="st2si", **processor_settings)
        backbone = AutoModel.from_config(tiny_config(model_type, vocab_size=len(tokenizer)))
        model = ST2SIForItemPrediction.from_backbone(
            backbone, num_items=len(catalog), query_token_id=processor.query_token_id,
            vocab_size=len(tokenizer), tune_mode=tune_mode,
        )
        return model, processor

    return build


@pytest.fixture
def run_without_genrec_hf(tmp_path):
    """Runs a Python script in a fresh interpreter that cannot import genrec_hf from the source tree
    (empty PYTHONPATH, cwd /tmp, its own HF modules cache, offline) and asserts it exits cleanly and
    prints `done`: how a Hub user without the package loads a checkpoint as remote code."""
    import subprocess
    import sys

    def run(script: str, done: str) -> str:
        env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
               "HF_HUB_OFFLINE": "1"}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/tmp",
                                stdin=subprocess.DEVNULL, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert done in result.stdout
        return result.stdout

    return run


def write_p5_sequences(path, num_users: int, length: int, num_items: int = 40, seed: int = 0):
    """A P5 file of users walking the catalog in steps of about 3 (learnable, a few ties): `path`."""
    rng = random.Random(seed)
    lines = []
    for user in range(num_users):
        start = rng.randrange(num_items)
        lines.append(f"u{user} " + " ".join(f"i{(start + 3 * k + rng.randrange(2)) % num_items}" for k in range(length)))
    path.write_text("\n".join(lines) + "\n")
    return path
