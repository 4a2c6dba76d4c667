"""The DeepSpeed ZeRO-2 / ZeRO-3 configs in examples/deepspeed (issue 13). DeepSpeed itself needs a
GPU and is not installed here: these check what can be checked without it, that every "auto" value
is one transformers' Trainer integration fills, and that each method's config exposes the hidden
size the integration reads for the bucket sizes."""

import json
import os

import pytest
import transformers.integrations.deepspeed as hf_deepspeed
from transformers import BartConfig

from genrec_hf.backbones import tiny_config
from genrec_hf.models import (GenRecConfig, GRU4RecConfig, LancerConfig, RecSysGLMConfig, SASRecConfig,
                              ST2SIConfig)

FOLDER = os.path.join(os.path.dirname(__file__), "..", "examples", "deepspeed")


def _auto_keys(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _auto_keys(value, path + ".")
        elif value == "auto":
            yield path


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3.json", 3)])
def test_every_auto_value_is_one_the_trainer_fills(name, stage):
    with open(os.path.join(FOLDER, name)) as f:
        config = json.load(f)
    assert config["zero_optimization"]["stage"] == stage
    source = open(hf_deepspeed.__file__).read()
    autos = list(_auto_keys(config))
    assert "train_micro_batch_size_per_gpu" in autos and "gradient_accumulation_steps" in autos
    for key in autos:  # fill_match("zero_optimization.reduce_bucket_size", ...) etc.
        assert f'"{key}"' in source, f"{name}: {key} is 'auto' but transformers does not fill it"
    if stage == 3:  # saving under ZeRO-3 needs the gathered 16-bit weights, or save_pretrained writes shards
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def _hidden_size(config):
    """The lookup transformers' HfTrainerDeepSpeedConfig.trainer_config_finalize does for "auto" buckets."""
    if hasattr(config, "hidden_size"):
        return config.hidden_size
    if hasattr(config, "text_config") and hasattr(config.text_config, "hidden_size"):
        return config.text_config.hidden_size
    return None


def test_every_method_config_exposes_the_hidden_size_the_buckets_are_sized_by():
    llama = tiny_config("llama", vocab_size=300)
    bart = BartConfig(vocab_size=300, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64)
    configs = {
        "st2si": ST2SIConfig(text_config=llama.to_dict(), num_items=10),
        "genrec": GenRecConfig(text_config=bart.to_dict(), num_users=3, num_items=10),
        "lancer": LancerConfig(text_config=llama.to_dict(), num_items=10),
        "recsys_glm": RecSysGLMConfig(text_config=llama.to_dict()),
        "sasrec": SASRecConfig(num_items=10),
        "gru4rec": GRU4RecConfig(num_items=10),
    }
    for method, config in configs.items():
        assert isinstance(_hidden_size(config), int) and _hidden_size(config) > 0, method
