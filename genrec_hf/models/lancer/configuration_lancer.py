"""LANCER configuration (Jiang et al., "Reformulating Sequential Recommendation: Learning Dynamic
User Interests with Content-enriched Language Modeling"). Self-contained: only transformers is
imported (Hub remote code)."""

from transformers import AutoConfig, PretrainedConfig

DECODE_MODES = ("cosine", "trie")


class LancerConfig(PretrainedConfig):
    r"""
    Args:
        text_config (`dict` or a decoder-only config):
            The language model (GPT-2 in the paper; any `AutoModelForCausalLM` architecture).
        num_items (`int`): catalog size (rows of the item token tables and item vectors).
        num_knowledge_tokens (`int`, defaults to 20): theta, the knowledge prompt's length (public code: 20).
        prompt_hidden_size (`int`, defaults to 512): width of the prompt MLPs' hidden layer
            (Linear, Tanh, Linear; prefix-tuning's default, the paper gives none).
        history_slots (`int`, defaults to 10): N, the reasoning prompt's length (paper: 10). Histories
            shorter than N leave slots that are masked out of the LM's attention.
        use_knowledge_prompt (`bool`, defaults to `True`), use_reasoning_prompt (`bool`, defaults to `True`):
            both off is the paper's LANCER-bare (the LM alone). The reasoning prompt attends to the
            knowledge prompt, so it needs it.
        max_item_tokens (`int`, defaults to 32): width of the item token tables (paper: 32 tokens per item).
        separator_token_ids (`list[int]`): the tokens that follow every item in the text; generation
            of an item ends with the separator's last token (or eos).
        decode (`str`, defaults to `"cosine"`): how `recommend` maps generated text to items:
            "cosine" (paper §3.4: max-pooled input embeddings, cosine over the catalog) or "trie"
            (beams kept on the catalog's token trie; every beam is an item).
        beam_size (`int`, defaults to 10): beams for `recommend` (paper: 10). Not `num_beams`:
            transformers reads generation settings from the generation config only.
        lora (`dict`, *optional*): PEFT LoRA settings (r, lora_alpha, lora_dropout, target_modules)
            when stage 2 tunes the LM with LoRA; the adapters are re-created from it on load.
        initializer_range (`float`, defaults to 0.02): std of the prompt MLPs' and attention's weights.
        knowledge_embedding_std (`float`, defaults to 1.0): std of the knowledge-token embedding
            (PyTorch's `nn.Embedding` default, as PEFT's prefix encoder starts it).
    """

    model_type = "lancer"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        num_items: int = 0,
        num_knowledge_tokens: int = 20,
        prompt_hidden_size: int = 512,
        history_slots: int = 10,
        use_knowledge_prompt: bool = True,
        use_reasoning_prompt: bool = True,
        max_item_tokens: int = 32,
        separator_token_ids: list | None = None,
        decode: str = "cosine",
        beam_size: int = 10,
        lora: dict | None = None,
        initializer_range: float = 0.02,
        knowledge_embedding_std: float = 1.0,
        **kwargs,
    ):
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", None)
            if model_type is None:
                raise ValueError("LancerConfig: text_config needs a model_type (e.g. 'gpt2', 'llama')")
            text_config = AutoConfig.for_model(model_type, **text_config)
        if text_config is not None and getattr(text_config, "is_encoder_decoder", False):
            raise ValueError(f"LancerConfig: text_config must be a decoder-only LM, got {text_config.model_type!r}")
        if num_items < 0:
            raise ValueError(f"LancerConfig: num_items must be >= 0, got {num_items}")
        if num_knowledge_tokens < 1 or history_slots < 1 or prompt_hidden_size < 1:
            raise ValueError("LancerConfig: num_knowledge_tokens, history_slots and prompt_hidden_size must be >= 1")
        if use_reasoning_prompt and not use_knowledge_prompt:
            raise ValueError("LancerConfig: the reasoning prompt attends to the knowledge prompt; it cannot be on alone")
        if decode not in DECODE_MODES:
            raise ValueError(f"LancerConfig: decode must be one of {DECODE_MODES}, got {decode!r}")
        if max_item_tokens < 1 or beam_size < 1:
            raise ValueError("LancerConfig: max_item_tokens and beam_size must be >= 1")
        self.text_config = text_config
        self.num_items = num_items
        self.num_knowledge_tokens = num_knowledge_tokens
        self.prompt_hidden_size = prompt_hidden_size
        self.history_slots = history_slots
        self.use_knowledge_prompt = use_knowledge_prompt
        self.use_reasoning_prompt = use_reasoning_prompt
        self.max_item_tokens = max_item_tokens
        self.separator_token_ids = list(separator_token_ids or [])
        self.decode = decode
        self.beam_size = beam_size
        self.lora = dict(lora) if lora else None
        self.initializer_range = initializer_range
        self.knowledge_embedding_std = knowledge_embedding_std
        super().__init__(**kwargs)

    @property
    def num_prefix_tokens(self) -> int:
        """Prefix positions in front of every attention layer's keys/values."""
        return (self.num_knowledge_tokens if self.use_knowledge_prompt else 0) + (
            self.history_slots if self.use_reasoning_prompt else 0
        )


__all__ = ["DECODE_MODES", "LancerConfig"]
