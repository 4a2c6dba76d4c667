"""GRU4Rec configuration (Hidasi et al., ICLR 2016; Tan et al., DLRS 2016), with RecBole's
defaults (`recbole/properties/model/GRU4Rec.yaml`). Self-contained: only transformers is
imported, so the file works as Hub remote code."""

from transformers import PretrainedConfig


class GRU4RecConfig(PretrainedConfig):
    r"""
    Args:
        num_items (`int`): catalog size; the item embedding has `num_items + 1` rows (row 0 = padding).
        max_items (`int`, defaults to 50): longest input the processor writes (RecBole's MAX_ITEM_LIST_LENGTH).
        embedding_size (`int`, defaults to 64): item embedding width (also the output item vectors').
        hidden_size (`int`, defaults to 128): GRU state width, projected back to `embedding_size`.
        num_hidden_layers (`int`, defaults to 1): stacked GRU layers (RecBole `num_layers`).
        dropout_prob (`float`, defaults to 0.3): dropout on the input embeddings (RecBole `dropout`).
    """

    model_type = "gru4rec"

    def __init__(
        self,
        num_items: int = 0,
        max_items: int = 50,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_hidden_layers: int = 1,
        dropout_prob: float = 0.3,
        **kwargs,
    ):
        if num_items < 0:
            raise ValueError(f"GRU4RecConfig: num_items must be >= 0, got {num_items}")
        if min(max_items, embedding_size, hidden_size, num_hidden_layers) < 1:
            raise ValueError("GRU4RecConfig: max_items, embedding_size, hidden_size and num_hidden_layers must be >= 1")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"GRU4RecConfig: dropout_prob must be in [0, 1), got {dropout_prob}")
        self.num_items = num_items
        self.max_items = max_items
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.dropout_prob = dropout_prob
        super().__init__(**kwargs)


__all__ = ["GRU4RecConfig"]
