"""SASRec configuration (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018),
with RecBole's defaults (`recbole/properties/model/SASRec.yaml`). Self-contained: only
transformers is imported, so the file works as Hub remote code."""

from transformers import PretrainedConfig


class SASRecConfig(PretrainedConfig):
    r"""
    Args:
        num_items (`int`): catalog size; the item embedding has `num_items + 1` rows (row 0 = padding).
        max_items (`int`, defaults to 50): longest input (position embeddings); RecBole's MAX_ITEM_LIST_LENGTH.
        hidden_size (`int`, defaults to 64): item / position embedding width (RecBole `hidden_size`).
        num_hidden_layers (`int`, defaults to 2): self-attention blocks (RecBole `n_layers`).
        num_attention_heads (`int`, defaults to 2): heads per block (RecBole `n_heads`).
        intermediate_size (`int`, defaults to 256): feed-forward width (RecBole `inner_size`).
        hidden_dropout_prob (`float`, defaults to 0.5): dropout on embeddings and block outputs.
        attention_probs_dropout_prob (`float`, defaults to 0.5): dropout on attention weights (RecBole `attn_dropout_prob`).
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (exact, erf-based GELU as RecBole's).
        layer_norm_eps (`float`, defaults to 1e-12).
        initializer_range (`float`, defaults to 0.02): std of the normal init of embeddings and linear layers.
    """

    model_type = "sasrec"

    def __init__(
        self,
        num_items: int = 0,
        max_items: int = 50,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int = 256,
        hidden_dropout_prob: float = 0.5,
        attention_probs_dropout_prob: float = 0.5,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if num_items < 0:
            raise ValueError(f"SASRecConfig: num_items must be >= 0, got {num_items}")
        if max_items < 1 or hidden_size < 1 or num_hidden_layers < 1 or intermediate_size < 1:
            raise ValueError("SASRecConfig: max_items, hidden_size, num_hidden_layers and intermediate_size must be >= 1")
        if num_attention_heads < 1 or hidden_size % num_attention_heads:
            raise ValueError(f"SASRecConfig: hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})")
        for name, p in (("hidden_dropout_prob", hidden_dropout_prob), ("attention_probs_dropout_prob", attention_probs_dropout_prob)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"SASRecConfig: {name} must be in [0, 1), got {p}")
        self.num_items = num_items
        self.max_items = max_items
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


__all__ = ["SASRecConfig"]
