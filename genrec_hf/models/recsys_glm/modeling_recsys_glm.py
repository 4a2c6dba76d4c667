"""RecSysLLM (Chu et al. 2023): GLM blank infilling for recommendation, with entity-aware 2D positions
and trie-driven dynamic positions at generation time.

One row = Part A (the corrupted text: features and behaviour sequence, each masked span replaced by
one [MASK] / [sMASK] / [gMASK]) then Part B (the spans in chronological order, each `[START] s_1 ..
s_l`). Part A attends bidirectionally; Part B causally, with a full view of Part A and of earlier
spans (eq. 1). Each token carries two positions, `position_ids` [B, 2, S]: row 0 the inter-position
(the position in the corrupted text; a span's tokens take their mask's), row 1 the intra-position
(0 for lone Part A tokens, 1..n inside a Part A entity, and in Part B: [START] 1, the next token 2,
then +1 while the token continues the same entity, 1 when a new one starts).

Two backbone kinds, one model class, one objective, one generation path:
- "recsys_glm_text": GLM itself (Du et al. 2021, THUDM glm-large / glm-10b layout and key names):
  word + position + block-position embeddings (inter -> position table, intra -> block table),
  pre-LayerNorm blocks with fused `query_key_value`, `dense`, `dense_h_to_4h`, `dense_4h_to_h`,
  tanh-GELU, final LayerNorm, output tied to the word embedding. `from_thudm_glm` loads THUDM weights.
- "llama" (rotary, e.g. SmolLM2): the backbone from `AutoModel`; inter-positions are its RoPE
  `position_ids`, intra-positions an added zero-initialised table (so a pretrained LM starts
  exactly as it was), the Part A / Part B pattern a 4D additive mask (transformers 5 passes a 4D mask
  through `create_causal_mask` unchanged; Llama's eager attention adds it, SDPA takes it as a float
  `attn_mask`, so an additive float mask serves both; a boolean one would break eager).
Backbone-specific names live in `BACKBONES`.

Generation (paper Figure 2): `prepare_inputs_for_generation` recomputes the positions of every
generated token from the (beam-reordered) `input_ids` at each step: inter = the prompt's [MASK]
inter-position, intra by walking the entity trie (the catalog's items) along the span, vectorised
over all beams. Beam search only reorders the KV cache, so nothing else carries per-beam state.
`recommend` runs beam search kept on the catalog trie (`TrieConstrainedLogitsProcessor`), maps beams
to item ids, deduplicates and counts them.

Self-contained (torch, transformers, same-folder files; peft only for LoRA), so a saved folder loads
with `trust_remote_code=True` where genrec_hf is not installed.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, DynamicCache, GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from .configuration_recsys_glm import GLM_TEXT_MODEL_TYPE, GLMTextConfig, RecSysGLMConfig
from .losses import labelled_cross_entropy
from .saving import SafetensorsOnlyLoading, give_weights_the_umask_mode, public_name
from .trie import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, rank_beams, repeat_factor

# transformers 5.24 renamed the KV-cache argument `past_key_values` to `cache`; 5.17 has the old name
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

# Everything that differs between backbone kinds, in one table.
#   module: the attribute holding the backbone (for GLM, THUDM's own key prefix `glm.`)
#   lora_targets: the paper's four GLM modules, or the rotary backbone's equivalents
#   positions: "learned_2d" = inter -> position table, intra -> block-position table;
#              "rotary" = inter -> the backbone's position_ids, intra -> `intra_position_embeddings`
BACKBONES = {
    GLM_TEXT_MODEL_TYPE: {
        "module": "glm",
        "lora_targets": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        "positions": "learned_2d",
    },
    "llama": {
        "module": "model",
        "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "positions": "rotary",
    },
}
LORA_TARGETS = {kind: spec["lora_targets"] for kind, spec in BACKBONES.items()}

# THUDM GLM: the parameters of one block (their names under `glm.transformer.layers.N.`)
THUDM_LAYER_KEYS = tuple(
    f"{module}.{param}"
    for module in ("input_layernorm", "attention.query_key_value", "attention.dense", "post_attention_layernorm",
                   "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
    for param in ("weight", "bias")
)
THUDM_TOP_KEYS = (
    "glm.word_embeddings.weight", "glm.transformer.position_embeddings.weight",
    "glm.transformer.block_position_embeddings.weight", "glm.transformer.final_layernorm.weight",
    "glm.transformer.final_layernorm.bias",
)


@dataclass
class RecSysGLMRecommendationOutput(ModelOutput):
    """
    item_ids: LongTensor [batch, top_k], catalog ids best first, deduplicated; -1 pads rows with
        fewer valid beams.
    scores: FloatTensor [batch, top_k], beam log-probabilities (-inf where item_ids is -1).
    num_valid: LongTensor [batch], beams that spelled a catalog item.
    num_generated: LongTensor [batch], beams generated.
    """

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    num_valid: torch.LongTensor | None = None
    num_generated: torch.LongTensor | None = None


# -- attention pattern and positions (pure functions) ------------------------------------------------

def infilling_visibility(attention_mask: torch.Tensor, part_a_length: torch.Tensor, query_length: int) -> torch.Tensor:
    """Who may attend to whom (Part A bidirectional, Part B causal).

    attention_mask: [B, T] (1 = real token) over every token so far (cached + current);
    part_a_length: [B], the column where Part B starts. The current queries are the last
    `query_length` columns. Returns BoolTensor [B, 1, query_length, T]: query column i may attend
    key column j iff attention_mask[j] == 1 and (j < part_a_length or j <= i). A query always sees
    itself, so padding rows are never empty (softmax over nothing is NaN; their outputs are unused).
    """
    batch, total = attention_mask.shape
    keys = torch.arange(total, device=attention_mask.device)
    queries = torch.arange(total - query_length, total, device=attention_mask.device)
    in_part_a = keys[None, None, :] < part_a_length.view(batch, 1, 1)
    causal = keys[None, :] <= queries[:, None]
    visible = attention_mask.bool()[:, None, :] & (in_part_a | causal[None])
    visible = visible | (keys[None, :] == queries[:, None])[None]
    return visible[:, None]


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean visibility -> additive float mask (0 where visible, the dtype's minimum elsewhere)."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, torch.finfo(dtype).min)


def infilling_intra_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, part_a_length: torch.Tensor, start_token_id: int,
    trie: TokenTrie | None = None,
) -> torch.Tensor:
    """Part B intra-positions read from the tokens (the contract's rule; paper Figure 2).

    [START] is 1 and the token after it 2. With an entity trie, each later token continues (+1) when
    (the current entity's path + the token) is a path of the trie, and otherwise restarts at 1 with
    its path restarting at the root (a lone token matches nothing, so the token after it restarts
    too). Without a trie (the ablation) every token continues: 1..n over each span, GLM's rule.
    input_ids, attention_mask: [N, T]; part_a_length: [N]. Returns LongTensor [N, T]; Part A and
    padding get 0. Vectorised over rows (all beams at once); a loop over Part B's columns only.
    """
    rows, total = input_ids.shape
    out = torch.zeros_like(input_ids)
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    pos = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
    node = torch.full_like(pos, -1)  # the current entity's trie node (-1: none)
    root = torch.zeros_like(pos)
    after_start = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    one = torch.ones_like(pos)
    first = int(part_a_length.min()) if rows else total
    for col in range(first, total):
        tok = input_ids[:, col]
        live = real[:, col] & (col >= part_a_length)
        is_start = tok == start_token_id
        if trie is None:
            new_pos, new_node = torch.where(is_start, one, pos + 1), node
        else:
            tok = torch.where(tok < trie.vocab_size, tok, torch.full_like(tok, -1))  # ids the trie never saw
            child = trie.step(node, tok)
            # the token right after [START] continues it (2) even when it starts no entity
            new_pos = torch.where(is_start, one, torch.where(after_start | (child >= 0), pos + 1, one))
            new_node = torch.where(is_start, root, torch.where(child >= 0, child, trie.step(root, tok)))
        pos = torch.where(live, new_pos, pos)
        node = torch.where(live, new_node, node)
        after_start = torch.where(live, is_start, after_start)
        out[:, col] = torch.where(live, new_pos, torch.zeros_like(pos))
    return out




# -- the native GLM backbone ------------------------------------------------------------------------
# Leaf classes of their own, so `_init_weights` matches the modules that hold the parameters
# (transformers 5 never visits a container without parameters of its own).

class GLMEmbedding(nn.Embedding):
    """Word, position or block-position table: N(0, initializer_range)."""


class GLMLinear(nn.Linear):
    """Input-side projection (`query_key_value`, `dense_h_to_4h`): N(0, initializer_range)."""


class GLMOutputLinear(nn.Linear):
    """Output projection of a sub-layer (`dense`, `dense_4h_to_h`): N(0, initializer_range / sqrt(2 L)),
    GLM's scaled init, so the residual stream's variance does not grow with depth."""


class GLMLayerNorm(nn.LayerNorm):
    """LayerNorm: weight 1, bias 0."""


class GLMAttention(nn.Module):
    """Self-attention with a fused `query_key_value` ([q | k | v], each hidden_size wide, THUDM's layout)."""

    def __init__(self, config: GLMTextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query_key_value = GLMLinear(config.hidden_size, 3 * config.hidden_size)
        self.dense = GLMOutputLinear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_dropout
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states, attention_mask, cache=None, output_attentions=False):
        """hidden_states [B, L, H]; attention_mask [B, 1, L, T] additive. Returns ([B, L, H], probs or None)."""
        batch, length, _ = hidden_states.shape
        q, k, v = (
            x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for x in self.query_key_value(hidden_states).chunk(3, dim=-1)
        )
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # [B, heads, T, head_dim]: Part A computed once
        dropout = self.attention_dropout if self.training else 0.0
        probs = None
        if output_attentions:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim) + attention_mask
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            context = F.dropout(probs, p=dropout, training=self.training) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.output_dropout(self.dense(context)), probs


class GLMMLP(nn.Module):
    def __init__(self, config: GLMTextConfig):
        super().__init__()
        self.dense_h_to_4h = GLMLinear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = GLMOutputLinear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x):
        # GLM's gelu is the tanh approximation
        return self.dropout(self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="tanh")))


class GLMBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm block: h + attn(LN(h)), then + mlp(LN(.))."""

    def __init__(self, config: GLMTextConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = GLMLayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = GLMAttention(config, layer_idx)
        self.post_attention_layernorm = GLMLayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = GLMMLP(config)

    def forward(self, hidden_states, attention_mask=None, cache=None, use_cache=False, output_attentions=False):
        attended, probs = self.attention(self.input_layernorm(hidden_states), attention_mask, cache, output_attentions)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states)), probs


class GLMTransformer(nn.Module):
    """Position tables, blocks and final LayerNorm (THUDM's `glm.transformer`)."""

    def __init__(self, config: GLMTextConfig):
        super().__init__()
        self.position_embeddings = GLMEmbedding(config.max_sequence_length, config.hidden_size)
        self.block_position_embeddings = GLMEmbedding(config.max_sequence_length, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([GLMBlock(config, i) for i in range(config.num_layers)])
        self.final_layernorm = GLMLayerNorm(config.hidden_size, eps=config.layernorm_epsilon)


class GLMModel(nn.Module):
    """GLM without its output layer (THUDM's `glm`): embeddings + 2D positions -> blocks -> final LayerNorm."""

    def __init__(self, config: GLMTextConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = GLMEmbedding(config.vocab_size, config.hidden_size)
        self.transformer = GLMTransformer(config)

    def forward(self, inputs_embeds, position_ids, attention_mask, cache=None, output_attentions=False, output_hidden_states=False):
        """inputs_embeds [B, L, H] (word embeddings); position_ids [B, 2, L]; attention_mask [B, 1, L, T]
        additive. Returns (last hidden [B, L, H], hidden states or None, attentions or None)."""
        t = self.transformer
        hidden = inputs_embeds + t.position_embeddings(position_ids[:, 0]) + t.block_position_embeddings(position_ids[:, 1])
        hidden = t.embedding_dropout(hidden)
        all_hidden = (hidden,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in t.layers:
            hidden, probs = layer(hidden, attention_mask=attention_mask, cache=cache, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden += (hidden,)
            if output_attentions:
                attentions += (probs,)
        return t.final_layernorm(hidden), all_hidden, attentions


class RecSysGLMIntraEmbedding(nn.Embedding):
    """The rotary kind's intra-position table, added to the token embeddings. Zero at init: the
    pretrained LM starts exactly as it was and learns what the intra-positions mean."""


class RecSysGLMLMHead(nn.Linear):
    """The rotary kind's output layer when the backbone does not tie it to the input embedding."""


# -- the model --------------------------------------------------------------------------------------

class RecSysGLMPreTrainedModel(SafetensorsOnlyLoading, PreTrainedModel):
    config_class = RecSysGLMConfig
    base_model_prefix = "glm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["GLMBlock", "LlamaDecoderLayer"]
    accepts_loss_kwargs = True  # forward divides by num_items_in_batch when Trainer passes it

    def save_pretrained(self, save_directory, *args, **kwargs):
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", f"modeling_recsys_glm.{type(self).__name__}")
        self.config.auto_map = auto_map
        out = super().save_pretrained(save_directory, *args, **kwargs)
        give_weights_the_umask_mode(save_directory)
        return out

    def _init_weights(self, module):
        # leaf classes only: a pretrained rotary backbone keeps its own weights
        text = self.config.text_config
        std = getattr(text, "initializer_range", 0.02)
        if isinstance(module, GLMEmbedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, GLMOutputLinear):
            nn.init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2.0 * text.num_layers))
            nn.init.zeros_(module.bias)
        elif isinstance(module, (GLMLinear, RecSysGLMLMHead)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, GLMLayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, RecSysGLMIntraEmbedding):
            nn.init.zeros_(module.weight)


class RecSysGLMForInfilling(RecSysGLMPreTrainedModel, GenerationMixin):
    """RecSysLLM on GLM or a rotary LM. Inputs from `SeqRecProcessor(method="recsys_glm")`:
    input_ids, attention_mask [B, S] (Part A left-padded to part_a_length, Part B right-padded),
    position_ids [B, 2, S], part_a_length [B], labels [B, S] (aligned: the next token at each Part B
    position, [END] after a span's last token, -100 elsewhere)."""

    def __init__(self, config: RecSysGLMConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        text = config.text_config
        if text is None:
            raise ValueError("RecSysGLMConfig.text_config is required: a GLMTextConfig or a Llama config")
        if self.backbone_kind == GLM_TEXT_MODEL_TYPE:
            self.glm = backbone if backbone is not None else GLMModel(text)
        else:
            self.model = backbone if backbone is not None else AutoModel.from_config(text)
            self.intra_position_embeddings = RecSysGLMIntraEmbedding(config.max_intra_positions, text.hidden_size)
            if not getattr(text, "tie_word_embeddings", False):
                self.lm_head = RecSysGLMLMHead(text.hidden_size, text.vocab_size, bias=False)
        # the catalog's item tokens (without [END]), -1 padded: the trie (entity pool and decoding
        # constraint) is built from it; saved with the weights so checkpoint and catalog stay together
        self.register_buffer(
            "item_token_ids", torch.full((config.num_items, config.max_item_tokens), -1, dtype=torch.long), persistent=True
        )
        self._trie: TokenTrie | None = None
        # gradient hooks that keep rows frozen while LoRA trains (the recipe's train_added_token_rows);
        # merge_lora removes them with the adapters, so full training afterwards updates every row
        self._frozen_row_hooks: list = []
        self.post_init()
        if config.lora:
            self._inject_lora(config.lora)  # after post_init: its init must not touch LoRA's (B = 0)
        self._set_generation_config()

    @classmethod
    def from_backbone(cls, backbone: PreTrainedModel, vocab_size: int | None = None, **config_kwargs):
        """Wrap a loaded rotary LM (an `AutoModel` such as `genrec_hf.backbones.load_backbone`'s, or
        an `AutoModelForCausalLM`, whose untied head is kept). vocab_size: resize the embeddings
        (len(tokenizer) after the processor added its special tokens)."""
        head = None
        if backbone.base_model is not backbone:  # a causal LM: keep its base model and head
            out = backbone.get_output_embeddings()
            base = backbone.base_model
            tied = getattr(backbone.config, "tie_word_embeddings", False)
            head = None if tied or out is None else out.weight.detach()
        else:
            base = backbone
        if getattr(base.config, "quantization_config", None) is not None:  # a dequantized GGUF: plain floats
            delattr(base.config, "quantization_config")
        base.hf_quantizer = None
        implementation = base.config._attn_implementation  # read first: the config below resets it (same object)
        config = RecSysGLMConfig(text_config=base.config, **config_kwargs)
        config.text_config._attn_implementation = implementation
        config.text_config._name_or_path = public_name(base.config._name_or_path)  # saved: never a local path
        model = cls(config, backbone=base)
        if getattr(model, "lm_head", None) is not None:
            with torch.no_grad():
                if head is not None:
                    model.lm_head.weight.copy_(head)
                else:  # a base model without a head of its own: start from its input embedding
                    model.lm_head.weight.copy_(base.get_input_embeddings().weight)
        if vocab_size is not None and vocab_size != model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(vocab_size, mean_resizing=True)
        return model

    def _set_generation_config(self) -> None:
        end = self.config.end_token_id
        self.generation_config = GenerationConfig(
            eos_token_id=end,
            pad_token_id=self.config.pad_token_id if self.config.pad_token_id is not None else end,
            num_beams=self.config.beam_size,
            max_new_tokens=self.config.max_item_tokens + 1,  # an item's tokens + [END]
            **ITEM_BEAM_SEARCH,  # full log-probability, exact search
        )

    @property
    def backbone_kind(self) -> str:
        """The text config's model_type: a key of `BACKBONES`."""
        return self.config.text_config.model_type

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, BACKBONES[self.backbone_kind]["module"])

    def get_input_embeddings(self):
        if self.backbone_kind == GLM_TEXT_MODEL_TYPE:
            return self.glm.word_embeddings
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        if self.backbone_kind == GLM_TEXT_MODEL_TYPE:
            self.glm.word_embeddings = value
        else:
            self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        # None = the output layer is the input embedding (GLM; tied rotary LMs such as SmolLM2)
        return getattr(self, "lm_head", None)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True):
        """transformers' resize (len(tokenizer) after the special tokens), keeping this model's leaf
        classes and init: transformers builds plain nn.Embedding / nn.Linear modules and, without
        mean_resizing, initialises their new rows through `_init_weights`, which matches neither.
        With mean_resizing the new rows are the old rows' mean plus noise at their per-dimension std
        (torch's RNG), so the added tokens start distinct."""
        old = self.get_input_embeddings().weight.shape[0]
        # new rows are set below either way: skip transformers' covariance (H x H, slow for a wide LM)
        out = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing=False)
        self._trie = None  # trie keys are node * vocab + token: a new vocabulary needs a new trie
        embeddings, head = self.get_input_embeddings(), self.get_output_embeddings()
        if self.backbone_kind == GLM_TEXT_MODEL_TYPE:
            embeddings.__class__ = GLMEmbedding
        if head is not None:
            head.__class__ = RecSysGLMLMHead
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        with torch.no_grad():
            for weight in (embeddings.weight, head.weight if head is not None else None):
                if weight is None or weight.shape[0] <= old:
                    continue
                if not mean_resizing:
                    weight[old:].normal_(0.0, std)
                    continue
                # transformers' mean resizing scales the covariance by 1e-9: the new rows ([MASK],
                # [START], [END], ...) would start identical. The old rows' mean plus noise at their
                # per-dimension std keeps them apart by about as much as two old rows.
                rows = weight[:old].float()
                noise = torch.randn(weight.shape[0] - old, weight.shape[1], device=weight.device)
                weight[old:] = (rows.mean(0) + noise * rows.std(0)).to(weight.dtype)
        return out

    # -- LoRA ---------------------------------------------------------------------------------------
    def enable_lora(self, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05, target_modules=None) -> None:
        """PEFT LoRA adapters (paper: rank 8) on the backbone's `BACKBONES` targets (GLM: query_key_value,
        dense, dense_h_to_4h, dense_4h_to_h). Afterwards only the adapters train, plus the rotary kind's
        intra-position table: it starts at zero, so frozen it would keep the intra-positions out of the
        model altogether. Saved in `config.lora`, so the adapters come back on load."""
        if self.config.lora:
            raise ValueError("LoRA adapters are already in this model")
        targets = list(target_modules or BACKBONES[self.backbone_kind]["lora_targets"])
        settings = {"r": r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "target_modules": targets}
        self._inject_lora(settings)
        self.config.lora = settings

    def _inject_lora(self, settings: dict) -> None:
        # try/except: transformers' check_imports skips imports inside try blocks, so a merged
        # checkpoint loads with trust_remote_code where peft is not installed
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as err:
            raise ImportError("LoRA needs peft: pip install peft") from err

        inject_adapter_in_model(LoraConfig(**settings), self.backbone)
        self.train(self.training)  # new modules (LoRA dropout) start in train mode: follow the model's
        for name, param in self.named_parameters():
            param.requires_grad_("lora_" in name or name.startswith("intra_position_embeddings."))

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the base weights and remove them (a plain model again, every
        parameter trainable, no gradient hook left from `_frozen_row_hooks`; config.lora is cleared)."""
        if not self.config.lora:
            raise ValueError("this model has no LoRA adapters")
        try:  # inside try: see _inject_lora
            from peft.tuners.lora import LoraLayer
        except ImportError as err:
            raise ImportError("LoRA needs peft: pip install peft") from err

        for name, module in list(self.backbone.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(self.backbone.get_submodule(parent) if parent else self.backbone, child, module.get_base_layer())
        self.config.lora = None
        for handle in self._frozen_row_hooks:
            handle.remove()
        self._frozen_row_hooks.clear()
        self.requires_grad_(True)

    # -- catalog ------------------------------------------------------------------------------------
    def set_catalog(self, item_token_table) -> None:
        """Store the catalog's item tokens [num_items, <= max_item_tokens] (-1 padded; the processor's
        `item_token_table()`; a trailing [END] is dropped). The trie is rebuilt on next use."""
        table = torch.as_tensor(item_token_table, dtype=torch.long).to(self.item_token_ids.device)
        if table.ndim != 2:
            raise ValueError(f"item_token_table must be [num_items, width], got shape {list(table.shape)}")
        if table.shape[0] != self.config.num_items:
            raise ValueError(f"catalog size mismatch: {table.shape[0]} item rows for num_items={self.config.num_items}")
        end = self.config.end_token_id
        if end is not None:
            table = table.masked_fill(table == end, -1)
        if table.shape[1] > self.config.max_item_tokens and bool((table[:, self.config.max_item_tokens:] >= 0).any()):
            raise ValueError(f"items have more than max_item_tokens={self.config.max_item_tokens} tokens")
        table = table[:, : self.config.max_item_tokens]
        if bool((table[:, 0] < 0).any()):
            raise ValueError(f"item {int((table[:, 0] < 0).nonzero()[0])} has no tokens")
        full = torch.full_like(self.item_token_ids, -1)
        full[:, : table.shape[1]] = table
        self.item_token_ids.copy_(full)
        self._trie = None

    @property
    def trie(self) -> TokenTrie:
        """The catalog trie over item tokens + [END]: the entity pool of dynamic positions and the
        decoding constraint. Items with the same tokens (ml-100k has titles shared by two movies)
        share a leaf, which names the first of them."""
        if self._trie is None:
            rows = self.item_token_ids
            if rows.shape[0] == 0 or bool((rows[:, 0] < 0).any()):
                raise ValueError("the catalog is not set: call model.set_catalog(processor.item_token_table()) first")
            if self.config.end_token_id is None:
                raise ValueError("the trie needs config.end_token_id ([END])")
            lengths = (rows >= 0).sum(1)
            table = torch.full((rows.shape[0], rows.shape[1] + 1), -1, dtype=torch.long, device=rows.device)
            table[:, : rows.shape[1]] = rows
            table.scatter_(1, lengths[:, None], self.config.end_token_id)
            vocab = self.get_input_embeddings().weight.shape[0]
            self._trie = TokenTrie(table, vocab, duplicates="first").to(rows.device)
        return self._trie

    def _apply(self, fn, *args, **kwargs):
        self._trie = None  # device moves rebuild the trie tensors lazily
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self._trie = None
        return super().load_state_dict(*args, **kwargs)

    # -- forward ------------------------------------------------------------------------------------
    def _check_inputs(self, batch, length, past, position_ids, part_a_length, attention_mask, device):
        """Validate the contract's tensors; returns (position_ids, part_a_length [B], attention_mask [B, past + L])."""
        if batch == 0 or length == 0:
            raise ValueError("empty input: input_ids must be [batch >= 1, seq >= 1]")
        if position_ids is None:
            raise ValueError(
                "RecSysGLM needs position_ids [batch, 2, seq] (GLM's 2D positions: inter, intra): "
                "build inputs with SeqRecProcessor(method='recsys_glm')"
            )
        if position_ids.ndim != 3 or tuple(position_ids.shape) != (batch, 2, length):
            raise ValueError(f"position_ids must be [batch, 2, seq] = [{batch}, 2, {length}], got {list(position_ids.shape)}")
        if part_a_length is None:
            raise ValueError("RecSysGLM needs part_a_length [batch] (the column where Part B starts)")
        part_a_length = torch.as_tensor(part_a_length, device=device).long().reshape(-1)
        if part_a_length.numel() == 1 and batch > 1:
            part_a_length = part_a_length.expand(batch)
        if part_a_length.shape[0] != batch:
            raise ValueError(f"part_a_length must be [batch] = [{batch}], got {part_a_length.shape[0]} values")
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + length, dtype=torch.long, device=device)
        elif tuple(attention_mask.shape) != (batch, past + length):
            raise ValueError(f"attention_mask must be [batch, cached + seq] = [{batch}, {past + length}], got {list(attention_mask.shape)}")
        if bool((part_a_length < 0).any()) or bool((part_a_length > past + length).any()):
            raise ValueError(f"part_a_length must lie in [0, {past + length}], got {part_a_length.tolist()}")
        if bool((position_ids < 0).any()):
            raise ValueError("position_ids must be >= 0")
        inter_rows, intra_rows = self._position_table_sizes()
        if inter_rows is not None and int(position_ids[:, 0].max()) >= inter_rows:
            raise ValueError(f"inter-position {int(position_ids[:, 0].max())} is outside the position table ({inter_rows} rows)")
        if int(position_ids[:, 1].max()) >= intra_rows:
            raise ValueError(f"intra-position {int(position_ids[:, 1].max())} is outside the intra-position table ({intra_rows} rows)")
        return position_ids.long(), part_a_length, attention_mask

    def _position_table_sizes(self) -> tuple[int | None, int]:
        """(rows of the inter-position table or None for RoPE, rows of the intra-position table)."""
        if self.backbone_kind == GLM_TEXT_MODEL_TYPE:
            rows = self.config.text_config.max_sequence_length
            return rows, rows
        return None, self.config.max_intra_positions

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        part_a_length: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        entity_ids: torch.LongTensor | None = None,
        history_item_ids: torch.LongTensor | None = None,
        num_items_in_batch=None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """
        input_ids: [B, L] the tokens (during cached generation: the new ones only).
        attention_mask: [B, cached + L], 1 = real token.
        position_ids: [B, 2, L] inter (row 0) and intra (row 1) positions of the L tokens.
        part_a_length: [B] the column where Part B starts (query i sees key j iff mask[j] and
            (j < part_a_length or j <= i)).
        labels: [B, L] aligned next-token labels (-100 = ignore); loss = mean cross-entropy over them.
        logits_to_keep: keep the last n positions' logits (0 = all; generation asks for 1).
        entity_ids, history_item_ids: accepted and ignored (the processor's checks / `recommend`).
        The KV cache comes as `cache` (`past_key_values` before transformers 5.24); it is used and
        returned when use_cache is true (default: only when a cache is passed).
        """
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else legacy
        kwargs.pop("cache_position", None)
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None:
            raise ValueError("pass input_ids (or inputs_embeds)")
        batch, length = ref.shape[:2]
        if use_cache is None:
            use_cache = cache is not None  # a training forward keeps no cache unless asked
        if not use_cache:
            cache = None
        elif cache is None:
            cache = DynamicCache(config=self.config.text_config)
        past = cache.get_seq_length() if cache is not None else 0
        position_ids, part_a_length, attention_mask = self._check_inputs(
            batch, length, past, position_ids, part_a_length, attention_mask, ref.device
        )
        plain = use_cache and not output_hidden_states and not output_attentions
        if past == 0 and labels is None and input_ids is not None and not torch.is_grad_enabled() and plain:
            repeats = repeat_factor(input_ids, attention_mask, position_ids, part_a_length)
            if repeats > 1:
                # beam search copies each prompt num_beams times before the first step: run it once
                # per row and copy the result (the cache and the logits) instead
                rows = torch.arange(0, batch, repeats, device=ref.device)
                out = self.forward(
                    input_ids=input_ids[rows], attention_mask=attention_mask[rows], position_ids=position_ids[rows],
                    part_a_length=part_a_length[rows], use_cache=True, logits_to_keep=logits_to_keep, **{CACHE_ARG: cache},
                )
                for layer in out[CACHE_ARG].layers:
                    layer.batch_repeat_interleave(repeats)
                return CausalLMOutputWithPast(logits=out.logits.repeat_interleave(repeats, dim=0), **{CACHE_ARG: out[CACHE_ARG]})

        visible = infilling_visibility(attention_mask, part_a_length, length)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        mask = additive_mask(visible, inputs_embeds.dtype)
        if self.backbone_kind == GLM_TEXT_MODEL_TYPE:
            hidden, all_hidden, attentions = self.glm(
                inputs_embeds, position_ids, mask, cache=cache,
                output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states),
            )
        else:
            implementation = self.config.text_config._attn_implementation
            if implementation not in (None, "eager", "sdpa"):
                raise ValueError(f"the rotary kind passes a 4D mask, which needs attn_implementation 'sdpa' or 'eager', not {implementation!r}")
            embeds = inputs_embeds + self.intra_position_embeddings(position_ids[:, 1]).to(inputs_embeds.dtype)
            out = self.model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids[:, 0], use_cache=use_cache,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states, **{CACHE_ARG: cache},
            )
            hidden, all_hidden, attentions = out.last_hidden_state, out.get("hidden_states"), out.get("attentions")
        if labels is None and logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        head = self.get_output_embeddings()
        logits = F.linear(hidden, head.weight if head is not None else self.get_input_embeddings().weight)
        loss = labelled_cross_entropy(logits, labels, num_items_in_batch) if labels is not None else None
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=all_hidden, attentions=attentions, **{CACHE_ARG: cache},
        )

    # -- generation ---------------------------------------------------------------------------------
    def generation_position_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_position_ids: torch.Tensor,
        part_a_length: torch.Tensor,
    ) -> torch.Tensor:
        """Positions [N, 2, T] of a generation step's full sequences input_ids [N, T] (beams reordered).

        The prompt's P columns keep their processor-built positions [N, 2, P]. Each generated token
        takes inter = the inter-position of the prompt's last real token (its span's [MASK]) and
        intra by the dynamic rule over the tokens themselves (`infilling_intra_positions` with the
        catalog trie; 1..n when config.dynamic_positions is False).
        """
        rows, total = input_ids.shape
        width = prompt_position_ids.shape[-1]
        if total == width:
            return prompt_position_ids
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        columns = torch.arange(1, width + 1, device=input_ids.device)
        last = (mask[:, :width].long() * columns).argmax(dim=1)  # the prompt's last real column
        inter = prompt_position_ids[:, 0].gather(1, last[:, None]).expand(rows, total - width)
        # plain positions (1..n): GLM's rule, and what a task row's free-text answer trains with
        trie = self.trie if self.config.dynamic_positions and not getattr(self, "_plain_positions", False) else None
        intra = infilling_intra_positions(input_ids, mask, part_a_length, self.config.start_token_id, trie)[:, width:]
        return torch.cat([prompt_position_ids, torch.stack([inter, intra], dim=1)], dim=-1)

    def prepare_inputs_for_generation(
        self, input_ids, attention_mask=None, prompt_position_ids=None, part_a_length=None, use_cache=True,
        inputs_embeds=None, **kwargs,
    ):
        """One generation step's inputs: the tokens not yet in the cache, their 2D positions
        (recomputed from the reordered input_ids), the full attention mask and part_a_length (the
        forward turns them into the Part A / Part B visibility of the new tokens)."""
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else legacy
        for key in ("next_sequence_length", "cache_position", "is_first_iteration", "position_ids"):
            kwargs.pop(key, None)
        if inputs_embeds is not None:
            raise ValueError("RecSysGLM generates from input_ids (the positions are read from the tokens)")
        if prompt_position_ids is None:
            raise ValueError("generate needs position_ids [batch, 2, seq] (the processor builds them)")
        positions = self.generation_position_ids(input_ids, attention_mask, prompt_position_ids, part_a_length)
        past = cache.get_seq_length() if (cache is not None and use_cache) else 0
        return {
            "input_ids": input_ids[:, past:], "attention_mask": attention_mask, "position_ids": positions[..., past:],
            "part_a_length": part_a_length, "use_cache": use_cache, CACHE_ARG: cache, **kwargs,
        }

    def _check_prompt(self, input_ids, position_ids, part_a_length, attention_mask) -> None:
        if input_ids is None or not torch.is_tensor(input_ids) or input_ids.ndim != 2 or input_ids.numel() == 0:
            raise ValueError("empty input: generate / recommend need input_ids [batch >= 1, seq >= 1]")
        batch, length = input_ids.shape
        if position_ids is None or tuple(position_ids.shape) != (batch, 2, length):
            got = None if position_ids is None else list(position_ids.shape)
            raise ValueError(f"position_ids must be [batch, 2, seq] = [{batch}, 2, {length}], got {got}")
        if part_a_length is None or torch.as_tensor(part_a_length).reshape(-1).shape[0] != batch:
            raise ValueError(f"part_a_length must be [batch] = [{batch}] (the column where Part B starts)")
        if self.config.start_token_id is None or self.config.end_token_id is None:
            raise ValueError("config.start_token_id and config.end_token_id are needed to generate")
        a = torch.as_tensor(part_a_length, device=input_ids.device).reshape(-1, 1)
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        part_b = torch.arange(length, device=input_ids.device)[None, :] >= a
        if not bool(((input_ids == self.config.start_token_id) & part_b & real).any(dim=1).all()):
            raise ValueError("every prompt's Part B must hold a [START] token (the span being generated)")
        if not bool(real[:, -1].all()):
            # generation appends after the last column: a row padded there would be read (and
            # continued) from a padding column
            rows = (~real[:, -1]).nonzero().flatten().tolist()
            raise ValueError(
                f"rows {rows} end in padding: to generate, Part B must end every row at the last column (prompts whose "
                "Part B differ in length cannot share a right-padded batch; generate them apart or with the same Part B length)"
            )

    def generate(self, input_ids=None, position_ids=None, part_a_length=None, constrained: bool = False, logits_processor=None,
                 plain_positions: bool = False, **kwargs):
        """`GenerationMixin.generate` for infilling: continues the last span of each prompt's Part B
        until [END]. position_ids [B, 2, P] and part_a_length [B] are required (the processor's);
        constrained=True keeps every beam on the catalog trie; plain_positions=True numbers the
        generated tokens 1..n (free text: a task row's text answer is trained so) instead of by
        the catalog trie. Other kwargs go to generate."""
        for key in ("history_item_ids", "entity_ids", "labels"):
            kwargs.pop(key, None)
        self._check_prompt(input_ids, position_ids, part_a_length, kwargs.get("attention_mask"))
        processors = LogitsProcessorList(logits_processor or [])
        if constrained and not any(isinstance(p, TrieConstrainedLogitsProcessor) for p in processors):
            processors.append(TrieConstrainedLogitsProcessor(self.trie, prefix_length=input_ids.shape[1], eos_token_id=self.config.end_token_id))
        part_a_length = torch.as_tensor(part_a_length, device=input_ids.device).long().reshape(-1)
        self._plain_positions = bool(plain_positions)
        try:
            return super().generate(
                input_ids=input_ids, prompt_position_ids=position_ids.long(), part_a_length=part_a_length,
                logits_processor=processors, **kwargs,
            )
        finally:
            self._plain_positions = False

    @torch.no_grad()
    def answer_log_likelihood(self, input_ids, attention_mask=None, position_ids=None, part_a_length=None, labels=None,
                              **kwargs) -> torch.Tensor:
        """[B] log-probability of each row's labelled answer (its tokens and [END]) given Part A,
        teacher-forced: how task rows (a rating, yes / no, a candidate item) are scored."""
        if labels is None:
            raise ValueError("answer_log_likelihood needs labels (task rows built with their answer)")
        logits = self(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      part_a_length=part_a_length).logits.float()
        mask = labels != -100
        picked = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * mask).sum(dim=1)

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        part_a_length: torch.LongTensor | None = None,
        history_item_ids: torch.LongTensor | None = None,
        top_k: int = 10,
        num_beams: int | None = None,
        exclude_history: bool = False,
        constrained: bool | None = None,
        **kwargs,
    ) -> RecSysGLMRecommendationOutput:
        """Next-item recommendation as infilling: beam search (beams >= top_k) after each prompt's
        [START], kept on the catalog trie unless config.use_trie / constrained is False; beams mapped
        to catalog ids, duplicates and invalid beams dropped (design.md §3).

        input_ids, attention_mask, position_ids, part_a_length: the processor's inference rows
        (Part A = history + [MASK], Part B = [START]). history_item_ids [B, n] (-1 padded): excluded
        when exclude_history. Other kwargs (max_new_tokens, logits_processor, ...) go to `generate`.
        """
        if exclude_history and history_item_ids is None:
            raise ValueError("exclude_history=True needs history_item_ids (the processor returns them)")
        self._check_prompt(input_ids, position_ids, part_a_length, attention_mask)
        trie = self.trie  # a clear error before any work when the catalog is missing
        constrained = self.config.use_trie if constrained is None else constrained
        num_beams = max(num_beams or self.config.beam_size, top_k, 2)  # 1 beam would be greedy: no beam scores
        for key, value in ITEM_BEAM_SEARCH.items():  # also for checkpoints saved with another generation config
            kwargs.setdefault(key, value)
        out = self.generate(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, part_a_length=part_a_length,
            num_beams=num_beams, num_return_sequences=num_beams, constrained=constrained,
            output_scores=True, return_dict_in_generate=True, do_sample=False, **kwargs,
        )
        batch = input_ids.shape[0]
        items = trie.items_of(out.sequences[:, input_ids.shape[1]:]).view(batch, num_beams)
        scores = out.sequences_scores.view(batch, num_beams).float()
        # when fewer hypotheses finish than beams (a catalog smaller than the beam count), beam
        # search fills the output with copies scored -1e9: not generated beams, not items
        finished = scores > -1e8
        items = items.masked_fill(~finished, -1)
        item_ids, ranked, num_valid = rank_beams(items, scores, top_k, history_item_ids if exclude_history else None)
        return RecSysGLMRecommendationOutput(
            item_ids=item_ids, scores=ranked, num_valid=num_valid, num_generated=finished.sum(dim=1),
        )

    # -- THUDM GLM checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_thudm_glm(cls, path_or_state_dict, dtype: torch.dtype = torch.float32, **config_overrides) -> "RecSysGLMForInfilling":
        """A RecSysGLM model with THUDM GLM weights (glm-large, glm-10b, ...).

        path_or_state_dict: a state dict, a weights file (.bin / .pt / .safetensors) or a folder
        holding one (sharded folders with an index file too). Sizes come from the weights; the head
        count is not in them: it defaults to hidden_size / 64 (glm-large 16, glm-10b 64) and can be
        overridden. dtype: of the loaded weights (glm-10b ships fp16; bfloat16 halves fp32's memory).
        config_overrides: GLMTextConfig fields (num_attention_heads, hidden_dropout, ...) and
        RecSysGLMConfig fields (token ids, num_items, lora, ...).
        """
        state_dict = path_or_state_dict
        if isinstance(path_or_state_dict, (str, os.PathLike)):
            state_dict = _load_weights(os.fspath(path_or_state_dict))
        converted = convert_thudm_glm_state_dict(state_dict)
        text_fields = {k: config_overrides.pop(k) for k in list(config_overrides) if k in _GLM_TEXT_FIELDS}
        lora = config_overrides.pop("lora", None)  # adapters go on after the base weights are in
        config = RecSysGLMConfig(text_config=glm_text_config_from_state_dict(converted, **text_fields), **config_overrides)
        with torch.device("meta"):  # no random init of weights about to be replaced (glm-10b: 10B of them)
            model = cls(config)
        weights = {k: v.to(dtype) for k, v in converted.items()}
        weights["item_token_ids"] = torch.full((config.num_items, config.max_item_tokens), -1, dtype=torch.long)
        model.load_state_dict(weights, strict=True, assign=True)
        if lora:
            model._inject_lora(dict(lora))
            model.config.lora = dict(lora)
        return model


_GLM_TEXT_FIELDS = (
    "num_attention_heads", "layernorm_epsilon", "hidden_dropout", "attention_dropout", "initializer_range", "vocab_size",
    "hidden_size", "num_layers", "intermediate_size", "max_sequence_length",
)


def convert_thudm_glm_state_dict(state_dict: dict) -> dict:
    """THUDM GLM weights -> this model's state dict (the GLM kind keeps THUDM's names).

    Accepts THUDM's Hugging Face checkpoints (`glm.word_embeddings.weight`,
    `glm.transformer.layers.N.attention.query_key_value.weight`, ...) and their Megatron ones
    (`{"module": {...}}`, names without `glm.`). Raises ValueError naming missing and unexpected keys.
    """
    if isinstance(state_dict, dict) and "module" in state_dict and isinstance(state_dict["module"], dict):
        state_dict = state_dict["module"]
    out = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        out[name if name.startswith("glm.") else f"glm.{name}"] = value
    layers = {int(m.group(1)) for k in out if (m := re.match(r"glm\.transformer\.layers\.(\d+)\.", k))}
    num_layers = max(layers) + 1 if layers else 0
    expected = set(THUDM_TOP_KEYS) | {f"glm.transformer.layers.{i}.{k}" for i in range(num_layers) for k in THUDM_LAYER_KEYS}
    missing, unexpected = sorted(expected - set(out)), sorted(set(out) - expected)
    if missing or unexpected or not num_layers:
        raise ValueError(
            f"not a THUDM GLM state dict ({num_layers} layers found): missing keys {missing[:12]}"
            f"{' ...' if len(missing) > 12 else ''}, unexpected keys {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}"
        )
    rows = {out[k].shape[0] for k in ("glm.transformer.position_embeddings.weight", "glm.transformer.block_position_embeddings.weight")}
    if len(rows) != 1:
        raise ValueError(f"position and block-position tables differ in length ({sorted(rows)}): GLMTextConfig has one max_sequence_length")
    return out


def glm_text_config_from_state_dict(state_dict: dict, **overrides) -> GLMTextConfig:
    """GLMTextConfig sizes read from converted THUDM weights; the head count defaults to hidden / 64."""
    vocab, hidden = state_dict["glm.word_embeddings.weight"].shape
    sizes = {
        "vocab_size": vocab, "hidden_size": hidden,
        "num_layers": len({k.split(".")[3] for k in state_dict if k.startswith("glm.transformer.layers.")}),
        "intermediate_size": state_dict["glm.transformer.layers.0.mlp.dense_h_to_4h.weight"].shape[0],
        "max_sequence_length": state_dict["glm.transformer.position_embeddings.weight"].shape[0],
        "num_attention_heads": max(hidden // 64, 1),
    }
    for key in ("vocab_size", "hidden_size", "num_layers", "intermediate_size", "max_sequence_length"):
        if key in overrides and overrides[key] != sizes[key]:
            raise ValueError(f"{key}={overrides[key]} does not match the weights ({sizes[key]})")
    return GLMTextConfig(**(sizes | overrides))


def _load_weights(path: str) -> dict:
    """A state dict from a weights file or a folder (single file, or shards listed in an index)."""
    if os.path.isdir(path):
        for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if os.path.isfile(os.path.join(path, index)):
                with open(os.path.join(path, index)) as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
                merged = {}
                for shard in shards:
                    merged.update(_load_weights(os.path.join(path, shard)))
                return merged
        for name in ("model.safetensors", "pytorch_model.bin", "mp_rank_00_model_states.pt"):
            if os.path.isfile(os.path.join(path, name)):
                return _load_weights(os.path.join(path, name))
        raise FileNotFoundError(f"no GLM weights in {path} (model.safetensors, pytorch_model.bin or mp_rank_00_model_states.pt)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # Megatron files pickle their training arguments too
        raise ValueError(
            f"{path} holds more than tensors (weights_only loading failed: {err}). If you trust the file, load it "
            "yourself (torch.load(path, weights_only=False)) and pass the state dict"
        ) from err


RecSysGLMForInfilling.register_for_auto_class("AutoModel")

__all__ = [
    "BACKBONES", "CACHE_ARG", "LORA_TARGETS", "GLMModel", "RecSysGLMForInfilling", "RecSysGLMPreTrainedModel",
    "RecSysGLMRecommendationOutput", "additive_mask", "convert_thudm_glm_state_dict", "glm_text_config_from_state_dict",
    "infilling_intra_positions", "infilling_visibility",
]
