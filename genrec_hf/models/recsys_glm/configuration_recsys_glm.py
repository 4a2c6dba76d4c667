"""RecSysLLM configuration (Chu et al., "Leveraging Large Language Models for Pre-trained Recommender
Systems"): GLM blank infilling with entity-aware masks, 2D positions and dynamic positions.

Two configs: `GLMTextConfig` (the native GLM backbone, Du et al. 2021, THUDM glm-large / glm-10b
layout) and `RecSysGLMConfig` (the recommender, holding any supported backbone as `text_config`).
Self-contained: only transformers is imported (Hub remote code).
"""

from transformers import AutoConfig, PretrainedConfig

# backbone kinds the model runs (modeling_recsys_glm.BACKBONES holds their specific names)
GLM_TEXT_MODEL_TYPE = "recsys_glm_text"
ROTARY_MODEL_TYPES = ("llama",)


class GLMTextConfig(PretrainedConfig):
    r"""
    The native GLM backbone (THUDM's GLM-1: glm-large, glm-10b). Field names follow THUDM's config.json.

    Args:
        vocab_size (`int`, defaults to 30592): rows of the (tied) word embedding.
        hidden_size (`int`, defaults to 1024), num_layers (`int`, defaults to 24),
        num_attention_heads (`int`, defaults to 16): glm-large's sizes (glm-10b: 4096, 48, 64).
        intermediate_size (`int`, *optional*): MLP width; None = 4 * hidden_size, as GLM.
        max_sequence_length (`int`, defaults to 512): rows of the position and block-position tables.
        layernorm_epsilon (`float`, defaults to 1e-5).
        hidden_dropout (`float`, defaults to 0.1): after the embeddings, attention output and MLP.
        attention_dropout (`float`, defaults to 0.1): on the attention probabilities.
        initializer_range (`float`, defaults to 0.02): std of weights at random init; the two output
            projections of each block (`dense`, `dense_4h_to_h`) use std / sqrt(2 * num_layers)
            (GLM's / Megatron's scaled init).
    """

    model_type = GLM_TEXT_MODEL_TYPE
    # names transformers' own code reads (DynamicCache(config=...), generation length checks)
    attribute_map = {"num_hidden_layers": "num_layers", "max_position_embeddings": "max_sequence_length"}

    def __init__(
        self,
        vocab_size: int = 30592,
        hidden_size: int = 1024,
        num_layers: int = 24,
        num_attention_heads: int = 16,
        intermediate_size: int | None = None,
        max_sequence_length: int = 512,
        layernorm_epsilon: float = 1e-5,
        hidden_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        **kwargs,
    ):
        if hidden_size % num_attention_heads:
            raise ValueError(f"GLMTextConfig: hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if min(vocab_size, hidden_size, num_layers, max_sequence_length) < 1:
            raise ValueError("GLMTextConfig: vocab_size, hidden_size, num_layers and max_sequence_length must be >= 1")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_sequence_length = max_sequence_length
        self.layernorm_epsilon = layernorm_epsilon
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", True)  # GLM's output layer is the word embedding
        super().__init__(**kwargs)


class RecSysGLMConfig(PretrainedConfig):
    r"""
    Args:
        text_config (`dict`, `GLMTextConfig` or a Llama config):
            The backbone. `GLMTextConfig` (model_type "recsys_glm_text") is the paper's GLM, with
            learned position and block-position tables; a Llama-family config (model_type "llama",
            e.g. SmolLM2) is the rotary kind: inter-positions go in as its `position_ids`,
            intra-positions through an added zero-initialised table.
        mask_token_id, smask_token_id, gmask_token_id, start_token_id, end_token_id (`int`):
            the five special tokens of the input format ([MASK], [sMASK], [gMASK], [START], [END]);
            `end_token_id` ends generation. pad_token_id (`int`): padding.
        num_items (`int`): catalog size (rows of the item token table the trie is built from).
        max_item_tokens (`int`, defaults to 16): width of the item token table (an item's tokens,
            without [END]); generation runs at most max_item_tokens + 1 steps.
        beam_size (`int`, defaults to 20): beams for `recommend`. Not `num_beams`: transformers
            reads generation settings from the generation config only.
        use_trie (`bool`, defaults to `True`): `recommend` keeps every beam on the catalog trie.
        dynamic_positions (`bool`, defaults to `True`): generation derives each new token's
            intra-position from the entity trie (paper Figure 2). False is the ablation: 1..n over
            each span, GLM's original rule (the processor must then build training rows the same way).
        max_intra_positions (`int`, defaults to 1024): rows of the rotary kind's intra-position table
            (the GLM kind uses its block-position table, `max_sequence_length` rows).
        lora (`dict`, *optional*): PEFT LoRA settings (r, lora_alpha, lora_dropout, target_modules);
            the adapters are re-created from it on load.
    """

    model_type = "recsys_glm"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        mask_token_id: int | None = None,
        smask_token_id: int | None = None,
        gmask_token_id: int | None = None,
        start_token_id: int | None = None,
        end_token_id: int | None = None,
        pad_token_id: int | None = None,
        num_items: int = 0,
        max_item_tokens: int = 16,
        beam_size: int = 20,
        use_trie: bool = True,
        dynamic_positions: bool = True,
        max_intra_positions: int = 1024,
        lora: dict | None = None,
        **kwargs,
    ):
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", None)
            if model_type is None:
                raise ValueError(f"RecSysGLMConfig: text_config needs a model_type ({GLM_TEXT_MODEL_TYPE!r} or 'llama')")
            # the GLM config is built here, so remote code needs no AutoConfig registration for it
            text_config = GLMTextConfig(**text_config) if model_type == GLM_TEXT_MODEL_TYPE else AutoConfig.for_model(model_type, **text_config)
        if text_config is not None:
            kind = getattr(text_config, "model_type", None)
            if kind not in (GLM_TEXT_MODEL_TYPE, *ROTARY_MODEL_TYPES):
                raise ValueError(
                    f"RecSysGLMConfig: unsupported backbone {kind!r}: use {GLM_TEXT_MODEL_TYPE!r} (native GLM) or one of "
                    f"{list(ROTARY_MODEL_TYPES)} (rotary kind)"
                )
        if num_items < 0:
            raise ValueError(f"RecSysGLMConfig: num_items must be >= 0, got {num_items}")
        if max_item_tokens < 1 or beam_size < 1 or max_intra_positions < 2:
            raise ValueError("RecSysGLMConfig: max_item_tokens and beam_size must be >= 1, max_intra_positions >= 2")
        self.text_config = text_config
        self.mask_token_id = mask_token_id
        self.smask_token_id = smask_token_id
        self.gmask_token_id = gmask_token_id
        self.start_token_id = start_token_id
        self.end_token_id = end_token_id
        self.pad_token_id = pad_token_id
        self.num_items = num_items
        self.max_item_tokens = max_item_tokens
        self.beam_size = beam_size
        self.use_trie = use_trie
        self.dynamic_positions = dynamic_positions
        self.max_intra_positions = max_intra_positions
        self.lora = dict(lora) if lora else None
        super().__init__(**kwargs)

    @property
    def special_token_ids(self) -> dict:
        """The five special tokens, keyed as the processor's `special_token_ids()` (mask_token_id, ...)."""
        return {f"{name}_token_id": getattr(self, f"{name}_token_id") for name in ("mask", "smask", "gmask", "start", "end")}


RecSysGLMConfig.register_for_auto_class()

__all__ = ["GLMTextConfig", "RecSysGLMConfig"]
