"""GRU4Rec: a GRU over item-ID embeddings (Hidasi et al., ICLR 2016), as RecBole builds it:
embedding -> dropout -> GRU (no bias) -> linear back to the embedding width -> scored against
every item embedding (tied), cross-entropy on the next item.

Self-contained (torch, transformers and same-folder files), so a saved folder loads with
`trust_remote_code=True` where genrec_hf is not installed.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_gru4rec import GRU4RecConfig
from .modeling_item_ids import ItemIDRecommendationOutput, ItemIDSeqRecModel, ItemIDSeqRecOutput


class GRU4RecPreTrainedModel(ItemIDSeqRecModel):
    config_class = GRU4RecConfig
    base_model_prefix = "gru4rec"

    def _init_weights(self, module):
        # RecBole: xavier-normal item embeddings, xavier-uniform GRU weights; the projection keeps
        # PyTorch's default Linear init, as in RecBole
        if isinstance(module, nn.Embedding):
            nn.init.xavier_normal_(module.weight)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.GRU):
            for name, weight in module.named_parameters():
                if name.startswith(("weight_ih", "weight_hh")):
                    nn.init.xavier_uniform_(weight)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()


class GRU4RecForSeqRec(GRU4RecPreTrainedModel):
    """GRU4Rec over the catalog. Inputs come from `GRU4RecProcessor`: `input_ids` [batch, seq]
    (catalog ids + 1, right-padded with 0), `attention_mask`, optional `labels` [batch, seq]."""

    def __init__(self, config: GRU4RecConfig):
        super().__init__(config)
        self.item_embedding = nn.Embedding(config.num_items + 1, config.embedding_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.dropout_prob)
        self.gru = nn.GRU(config.embedding_size, config.hidden_size, num_layers=config.num_hidden_layers,
                          bias=False, batch_first=True)
        self.projection = nn.Linear(config.hidden_size, config.embedding_size)
        self.post_init()

    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.FloatTensor:
        """[batch, seq] ids -> [batch, seq, embedding_size]; a recurrence reads left to right, so
        right padding never reaches a real position."""
        states, _ = self.gru(self.embedding_dropout(self.item_embedding(input_ids)))
        return self.projection(states)


GRU4RecConfig.register_for_auto_class()
GRU4RecForSeqRec.register_for_auto_class("AutoModel")

__all__ = ["GRU4RecForSeqRec", "GRU4RecPreTrainedModel", "ItemIDRecommendationOutput", "ItemIDSeqRecOutput"]
