"""SASRec: causal self-attention over item-ID embeddings (Kang & McAuley, ICDM 2018), as RecBole
builds it: item + learned position embeddings -> LayerNorm -> dropout -> post-LN Transformer
blocks with a causal mask -> the state at each position scored against every item embedding
(tied), cross-entropy on the next item.

Self-contained (torch, transformers and same-folder files), so a saved folder loads with
`trust_remote_code=True` where genrec_hf is not installed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .configuration_sasrec import SASRecConfig
from .modeling_item_ids import ItemIDRecommendationOutput, ItemIDSeqRecModel, ItemIDSeqRecOutput


class SASRecBlock(nn.Module):
    """Post-LN block: x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x))) (RecBole's TransformerLayer)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attention_output = nn.Linear(h, h)
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.feed_forward_in = nn.Linear(h, config.intermediate_size)
        self.feed_forward_out = nn.Linear(config.intermediate_size, h)
        self.feed_forward_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, seq, hidden] -> [batch, seq, hidden]; position t attends to 0..t only."""
        b, s, h = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.attention_dropout if self.training else 0.0
        )
        x = self.attention_norm(x + self.dropout(self.attention_output(attended.transpose(1, 2).reshape(b, s, h))))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward_out(self.act(self.feed_forward_in(x)))))


class SASRecPreTrainedModel(ItemIDSeqRecModel):
    config_class = SASRecConfig
    base_model_prefix = "sasrec"

    def _init_weights(self, module):
        # RecBole: normal(0, initializer_range) for embeddings and linear layers, LayerNorm 1 / 0
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SASRecForSeqRec(SASRecPreTrainedModel):
    """SASRec over the catalog. Inputs come from `SASRecProcessor`: `input_ids` [batch, seq]
    (catalog ids + 1, right-padded with 0), `attention_mask`, optional `labels` [batch, seq]
    (the next item at each position, -100 = ignore)."""

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_items, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.FloatTensor:
        """[batch, seq] ids -> [batch, seq, hidden]. Right padding needs no key mask: under the
        causal mask a real position never sees the pads after it."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embedding_dropout(self.embedding_norm(self.item_embedding(input_ids) + self.position_embedding(positions)))
        for block in self.blocks:
            x = block(x)
        return x


SASRecConfig.register_for_auto_class()
SASRecForSeqRec.register_for_auto_class("AutoModel")

__all__ = ["ItemIDRecommendationOutput", "ItemIDSeqRecOutput", "SASRecBlock", "SASRecForSeqRec", "SASRecPreTrainedModel"]
