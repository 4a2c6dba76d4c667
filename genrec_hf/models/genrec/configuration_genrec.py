"""GenRec configuration (Cao & Liò, "GenRec: Generative Sequential Recommendation with Large
Language Models"). Self-contained: only transformers is imported (Hub remote code)."""

from transformers import AutoConfig, PretrainedConfig


class GenRecConfig(PretrainedConfig):
    r"""
    Args:
        text_config (`dict` or `BartConfig`):
            The BART encoder-decoder (bart-base in the paper; any BART config works).
        num_users (`int`):
            Known users. The user ID table has `num_users + 1` rows: row 0 is the unknown user.
        num_items (`int`):
            Catalog size: rows of the item ID table and of the item token table.
        max_item_tokens (`int`, defaults to 8):
            Width of the item token table (an item's text tokens + eos): what the decoder
            generates and the trie constrains.
        constrained_decoding (`bool`, defaults to `True`):
            `generate` / `recommend` keep every beam on the catalog trie.
        beam_size (`int`, defaults to 20): beams for `recommend` (paper: 20, top 20). Not `num_beams`:
            transformers reads generation settings from the generation config only.
        id_init_std (`float`, defaults to 0.02): std of the ID tables' initial weights.
        id_embedding_scale (`float`, defaults to 1.0): factor on the added ID embedding. 1.0 is
            eq. 2 as written (token + position + ID); the public GenRec code multiplies by
            1/sqrt(d_model). README "GenRec" gives the measurement behind the default.
    """

    model_type = "genrec"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        num_users: int = 0,
        num_items: int = 0,
        max_item_tokens: int = 8,
        constrained_decoding: bool = True,
        beam_size: int = 20,
        id_init_std: float = 0.02,
        id_embedding_scale: float = 1.0,
        **kwargs,
    ):
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", "bart")
            text_config = AutoConfig.for_model(model_type, **text_config)
        if text_config is not None and getattr(text_config, "model_type", None) != "bart":
            raise ValueError(f"GenRecConfig: text_config must be a BART config, got {text_config.model_type!r}")
        if num_users < 0 or num_items < 0:
            raise ValueError("GenRecConfig: num_users and num_items must be >= 0")
        if max_item_tokens < 2:
            raise ValueError("GenRecConfig: max_item_tokens must hold at least one token and eos")
        self.text_config = text_config
        self.num_users = num_users
        self.num_items = num_items
        self.max_item_tokens = max_item_tokens
        self.constrained_decoding = constrained_decoding
        self.beam_size = beam_size
        self.id_init_std = id_init_std
        self.id_embedding_scale = float(id_embedding_scale)
        kwargs.setdefault("is_encoder_decoder", True)
        super().__init__(**kwargs)


__all__ = ["GenRecConfig"]
