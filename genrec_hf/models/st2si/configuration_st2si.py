"""ST2SI configuration (Zhai et al., "Learning Transition Patterns by Large Language Models for
Sequential Recommendation"). Self-contained: only transformers is imported, so the file works
as Hub remote code."""

from transformers import AutoConfig, PretrainedConfig

TUNE_MODES = ("full", "ilp", "top_k")


class ST2SIConfig(PretrainedConfig):
    r"""
    Args:
        text_config (`dict` or `PretrainedConfig`):
            Config of the decoder-only backbone (OPT in the paper; GPT-2, Llama/SmolLM2, ... work too).
        num_items (`int`):
            Catalog size N: the item linear projection (ILP) maps hidden states to N item logits.
        query_token (`str`, defaults to `"[Q]"`):
            The query token inserted after each item text (multi-query input, eq. 2).
        query_token_id (`int`):
            Its id in the tokenizer; the model reads logits at the positions of this token.
        tune_mode (`str`, defaults to `"full"`):
            `"full"` trains backbone and ILP; `"ilp"` freezes the backbone and trains the ILP only
            (efficient ILP tuning, §3.4.2); `"top_k"` (not in the paper: a middle setting for
            CPUs) trains the top `tune_layers` transformer layers, what follows them (the final
            norm) and the ILP, with the embeddings and lower layers frozen, so their output can be
            computed once and reused every epoch.
        tune_layers (`int`, defaults to 2):
            With `tune_mode="top_k"`: how many of the backbone's top transformer layers train.
        multi_query (`bool`, defaults to `True`):
            A query token after every item (and a loss at each); `False` is the paper's
            "w/o multi-query" ablation: one query token at the end.
        id_alignment (`bool`, defaults to `True`):
            Mix ID-alignment instructions ("Please give the ID of the following item: <text> [Q]"
            -> its own id, §3.3) into training; `False` is the "w/o ID alignment" ablation.
        alignment_instruction (`str`):
            The instruction text of those samples.
        max_items (`int`, defaults to 50), max_item_tokens (`int`, defaults to 32):
            Input budget: the last `max_items` items of a history, each text cut to
            `max_item_tokens` tokens (the paper's settings).
        ilp_bias (`bool`, defaults to `False`): whether the ILP has a bias (an item prior). Eq. 5 is
            Softmax(W h) and the official code has none; the bias is an option, not the paper.
        initializer_range (`float`, defaults to 0.02): std of the ILP's initial weights.
    """

    model_type = "st2si"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        num_items: int = 0,
        query_token: str = "[Q]",
        query_token_id: int | None = None,
        tune_mode: str = "full",
        tune_layers: int = 2,
        multi_query: bool = True,
        id_alignment: bool = True,
        alignment_instruction: str = "Please give the ID of the following item:",
        max_items: int = 50,
        max_item_tokens: int = 32,
        ilp_bias: bool = False,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", None)
            if model_type is None:
                raise ValueError("ST2SIConfig: text_config needs a model_type (e.g. 'opt', 'gpt2', 'llama')")
            text_config = AutoConfig.for_model(model_type, **text_config)
        if tune_mode not in TUNE_MODES:
            raise ValueError(f"ST2SIConfig: tune_mode must be one of {TUNE_MODES}, got {tune_mode!r}")
        if not isinstance(tune_layers, int) or isinstance(tune_layers, bool) or tune_layers < 1:
            raise ValueError(f"ST2SIConfig: tune_layers must be an integer >= 1, got {tune_layers!r}")
        if num_items < 0:
            raise ValueError(f"ST2SIConfig: num_items must be >= 0, got {num_items}")
        if max_items < 1 or max_item_tokens < 1:
            raise ValueError("ST2SIConfig: max_items and max_item_tokens must be >= 1")
        self.text_config = text_config
        self.num_items = num_items
        self.query_token = query_token
        self.query_token_id = query_token_id
        self.tune_mode = tune_mode
        self.tune_layers = tune_layers
        self.multi_query = multi_query
        self.id_alignment = id_alignment
        self.alignment_instruction = alignment_instruction
        self.max_items = max_items
        self.max_item_tokens = max_item_tokens
        self.ilp_bias = ilp_bias
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


__all__ = ["ST2SIConfig"]
