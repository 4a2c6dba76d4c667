"""LANCER: a decoder LM steered by a knowledge prompt and a per-user reasoning prompt, generating
the next item's text, mapped to catalog items by cosine similarity or kept on the catalog trie.

- Knowledge prompt (eq. 3-4): theta knowledge tokens -> embedding -> MLP (Linear, Tanh, Linear)
  -> a key/value prefix for every attention layer. Trained first on the catalog's detail texts
  with an LM loss while the LM is frozen (the knowledge stage).
- Item vectors h_i (eq. 5): the last layer's hidden state at the last real token of an item's
  detail text, read with the knowledge prompt; computed for the whole catalog in batches and
  cached in `item_vectors` with a fingerprint of the weights they came from, so they are
  recomputed when those weights change (before any recommendation; once per epoch in training,
  through `LancerItemVectorsCallback`).
- Reasoning prompt (eq. 6-9): Q from the history's item vectors (N slots, padded slots masked
  out of the LM's attention), K and V from the knowledge prompt, scaled dot-product attention,
  then an MLP -> N more prefix positions per layer, different for every user.
- Generation (§3.4): `generate` continues `<instruction> t_1 -> ... t_n ->`; the prefixes are
  written into the (empty) KV cache at the first step, so beam search reorders them with the
  rest of the cache and later steps reuse them. `recommend` maps each beam to an item by cosine
  similarity of max-pooled input embeddings (eq. 12) or keeps beams on the catalog trie.

The prefix is native (transformers' `Cache` API), not PEFT's prefix tuning: PEFT's prompt is
the same for every input, so it cannot carry the per-user reasoning prompt, and design.md §7 lists
its other limits (no gradient checkpointing, Llama + prefix + generate without cache fails).
Gradient checkpointing is refused here too: a checkpointed layer runs without the cache.

Self-contained (torch, transformers, same-folder files; peft only for LoRA), so a saved folder
loads with `trust_remote_code=True` where genrec_hf is not installed.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from .configuration_lancer import LancerConfig
from .cosine import CosineItemMapper
from .saving import SafetensorsOnlyLoading, give_weights_the_umask_mode, public_name
from .trie import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, rank_beams, repeat_factor

# transformers 5.24 renamed the KV-cache argument `past_key_values` to `cache`; 5.17 has the old name
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
STRATEGIES = ("beam_search", "beam_sample", "greedy", "sample")  # the paper's four (Figure 4)


@dataclass
class LancerRecommendationOutput(ModelOutput):
    """
    item_ids: LongTensor [batch, top_k], catalog ids best first, deduplicated; -1 pads rows with
        fewer items.
    scores: FloatTensor [batch, top_k], beam log-probabilities (beam strategies) or cosine
        similarities (greedy / sample with cosine mapping); -inf where item_ids is -1.
    num_valid: LongTensor [batch], generated sequences that mapped to a catalog item.
    num_generated: LongTensor [batch], sequences generated.
    num_distinct: LongTensor [batch], distinct items among the valid sequences.
    """

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    num_valid: torch.LongTensor | None = None
    num_generated: torch.LongTensor | None = None
    num_distinct: torch.LongTensor | None = None


class LancerPromptEmbedding(nn.Embedding):
    """The knowledge tokens' embedding (its own class so `_init_weights` matches the leaf module)."""


class LancerPromptLinear(nn.Linear):
    """A linear layer of the prompts (its own class so `_init_weights` never touches the LM's)."""


class LancerPrefixMLP(nn.Module):
    """Linear, Tanh, Linear: [..., in_dim] -> [..., out_dim] (prefix-tuning's reparametrisation)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.up = LancerPromptLinear(in_dim, hidden)
        self.down = LancerPromptLinear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.tanh(self.up(x)))


@dataclass
class PrefixLayout:
    """How a prefix row of width `layers * 2 * kv_heads * head_dim` splits into per-layer K and V."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, text_config) -> "PrefixLayout":
        heads = text_config.num_attention_heads
        kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(text_config.num_hidden_layers, kv_heads, head_dim)

    @property
    def width(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim

    def split(self, prefix: torch.Tensor) -> torch.Tensor:
        """[batch, P, width] -> [layers, 2 (key, value), batch, kv_heads, P, head_dim]."""
        batch, length, _ = prefix.shape
        return prefix.view(batch, length, self.layers, 2, self.kv_heads, self.head_dim).permute(2, 3, 0, 4, 1, 5)


class LancerKnowledgePrompt(nn.Module):
    """Eq. 3: KP = MLP(Emb([k_1 .. k_theta])), one row of per-layer keys and values per knowledge token."""

    def __init__(self, num_tokens: int, dim: int, hidden: int, width: int):
        super().__init__()
        self.embedding = LancerPromptEmbedding(num_tokens, dim)
        self.mlp = LancerPrefixMLP(dim, hidden, width)

    def forward(self) -> torch.Tensor:
        """Returns [theta, width]."""
        return self.mlp(self.embedding.weight)


class LancerReasoningPrompt(nn.Module):
    """Eq. 6-9: RP = MLP(softmax(Q K^T / sqrt(d)) V), Q = W_q [h_1..h_N] + b_q, K = W_k KP + b_k,
    V = W_v KP + b_v: each history item picks the part of the domain knowledge it needs."""

    def __init__(self, dim: int, hidden: int, width: int):
        super().__init__()
        self.query = LancerPromptLinear(dim, dim)
        self.key = LancerPromptLinear(width, dim)
        self.value = LancerPromptLinear(width, dim)
        self.mlp = LancerPrefixMLP(dim, hidden, width)

    def forward(self, item_vectors: torch.Tensor, knowledge: torch.Tensor) -> torch.Tensor:
        """item_vectors [batch, N, dim], knowledge [theta, width] -> [batch, N, width]."""
        q = self.query(item_vectors)
        k, v = self.key(knowledge), self.value(knowledge)
        attention = torch.softmax(q @ k.transpose(0, 1) / math.sqrt(q.shape[-1]), dim=-1)
        return self.mlp(attention @ v)




class LancerPreTrainedModel(SafetensorsOnlyLoading, PreTrainedModel):
    config_class = LancerConfig
    base_model_prefix = "lancer"
    # the prompts reach attention through the KV cache, and a checkpointed decoder layer runs
    # with cache=None (transformers drops it so the backward replay does not write it twice):
    # the prefix would vanish and the mask no longer fit. Refuse it with a clear error.
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        # the item vectors saved with the weights must be those of the weights
        if getattr(self, "reasoning_prompt", None) is not None and bool((self.item_token_ids[:, 0] >= 0).all()):
            if self.item_vectors_stale():
                self.refresh_item_vectors()
        # remote code: list AutoModel next to the AutoModelForCausalLM entry register_for_auto_class writes
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", f"modeling_lancer.{type(self).__name__}")
        self.config.auto_map = auto_map
        out = super().save_pretrained(save_directory, *args, **kwargs)
        give_weights_the_umask_mode(save_directory)
        return out

    def _init_weights(self, module):
        # leaf classes of the prompts only: a container without parameters is never visited, and
        # the wrapped LM keeps its own (pretrained) weights
        if isinstance(module, LancerPromptEmbedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.knowledge_embedding_std)
        elif isinstance(module, LancerPromptLinear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)


class LancerForSeqRec(LancerPreTrainedModel, GenerationMixin):
    """LANCER on any decoder-only LM. Inputs from `SeqRecProcessor(method="lancer")`: input_ids,
    attention_mask [batch, seq] (left-padded), prompt_item_ids [batch, <= N] (the history items
    whose vectors query the knowledge prompt, -1 = empty slot) and labels (item tokens)."""

    def __init__(self, config: LancerConfig, lm: PreTrainedModel | None = None):
        super().__init__(config)
        # the LM shifts the labels: the Trainer counts labels[..., 1:] for num_items_in_batch, as for a causal LM
        self.loss_type = "ForCausalLM"
        if config.text_config is None:
            raise ValueError("LancerConfig.text_config is required: a decoder-only LM config")
        self.lm = lm if lm is not None else AutoModelForCausalLM.from_config(config.text_config)
        self.layout = PrefixLayout.of(config.text_config)
        dim = config.text_config.hidden_size
        self.knowledge_prompt = (
            LancerKnowledgePrompt(config.num_knowledge_tokens, dim, config.prompt_hidden_size, self.layout.width)
            if config.use_knowledge_prompt else None
        )
        self.reasoning_prompt = (
            LancerReasoningPrompt(dim, config.prompt_hidden_size, self.layout.width) if config.use_reasoning_prompt else None
        )
        n, width = config.num_items, config.max_item_tokens
        # the catalog, saved with the weights so checkpoint and catalog stay together:
        # sequence-text tokens (generated, mapped, trie) and prefix + detail-text tokens (item vectors)
        self.register_buffer("item_token_ids", torch.full((n, width), -1, dtype=torch.long), persistent=True)
        self.register_buffer("item_detail_ids", torch.full((n, width + 1), -1, dtype=torch.long), persistent=True)
        # h_i of every item and a fingerprint of the weights they were computed with (NaN: never)
        self.register_buffer("item_vectors", torch.zeros(n, dim), persistent=True)
        self.register_buffer("item_vectors_fingerprint", torch.full((4,), float("nan"), dtype=torch.float64), persistent=True)
        self._trie: TokenTrie | None = None
        self._mapper: tuple | None = None
        self.post_init()
        if config.lora:
            self._inject_lora(config.lora)  # after post_init: its init must not touch LoRA's (B = 0)
        self._set_generation_config()

    @classmethod
    def from_lm(cls, lm: PreTrainedModel, num_items: int, separator_token_ids, vocab_size: int | None = None, **config_kwargs):
        """Wrap a loaded (pretrained) causal LM (`AutoModelForCausalLM`)."""
        if getattr(lm.config, "quantization_config", None) is not None:  # a dequantized GGUF: plain floats
            delattr(lm.config, "quantization_config")
        lm.hf_quantizer = None
        if vocab_size is not None and vocab_size != lm.get_input_embeddings().weight.shape[0]:
            lm.resize_token_embeddings(vocab_size, mean_resizing=True)
        attn_implementation = lm.config._attn_implementation
        config = LancerConfig(text_config=lm.config, num_items=num_items, separator_token_ids=list(separator_token_ids), **config_kwargs)
        config.text_config._attn_implementation = attn_implementation
        config.text_config._name_or_path = public_name(lm.config._name_or_path)  # saved: never a local path
        return cls(config, lm=lm)

    def _set_generation_config(self) -> None:
        text = self.config.text_config
        eos = [t for t in (self.item_end_token_id, text.eos_token_id) if t is not None]
        self.generation_config = GenerationConfig(
            bos_token_id=text.bos_token_id,
            eos_token_id=list(dict.fromkeys(eos)) or None,
            pad_token_id=text.pad_token_id if text.pad_token_id is not None else (eos[-1] if eos else None),
            num_beams=self.config.beam_size,
            max_new_tokens=self.config.max_item_tokens + len(self.config.separator_token_ids),
            **ITEM_BEAM_SEARCH,  # full log-probability, exact search
        )

    @property
    def item_end_token_id(self) -> int | None:
        """The separator's last token: generating it ends an item (it is one of the eos ids)."""
        sep = self.config.separator_token_ids
        return sep[-1] if sep else None

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.lm.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    # -- training stages and LoRA -------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        """Which parameters train. "knowledge": the knowledge prompt (LM frozen; §3.2);
        "prompt": both prompts (LM frozen; stage 1); "full": prompts + LM (stage 2);
        "lora": prompts + the LM's LoRA adapters (stage 2 with `enable_lora` first)."""
        if stage not in ("knowledge", "prompt", "full", "lora"):
            raise ValueError(f"stage must be knowledge | prompt | full | lora, got {stage!r}")
        if stage == "lora" and not self.config.lora:
            raise ValueError("stage 'lora' needs LoRA adapters: call enable_lora() first")
        if stage in ("knowledge", "prompt") and self.knowledge_prompt is None:  # before any requires_grad change
            raise ValueError("this model has no prompts (the bare variant): train it with stage 'full' or 'lora'")
        self.lm.requires_grad_(stage == "full")
        if stage == "lora":
            for name, param in self.lm.named_parameters():
                param.requires_grad_("lora_" in name)
        if self.knowledge_prompt is not None:
            self.knowledge_prompt.requires_grad_(True)
        if self.reasoning_prompt is not None:
            self.reasoning_prompt.requires_grad_(stage != "knowledge")

    def enable_lora(self, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05, target_modules=None) -> None:
        """Add PEFT LoRA adapters to the LM (stage 2). Item vectors keep coming from the un-adapted
        LM: the adapters are switched off while items are encoded."""
        if self.config.lora:
            raise ValueError("LoRA adapters are already in this model")
        if target_modules is None:
            try:  # inside try: see _inject_lora
                from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
            except ImportError as err:
                raise ImportError("LoRA needs peft: pip install peft") from err

            model_type = self.config.text_config.model_type
            if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
                raise ValueError(f"PEFT has no default LoRA targets for {model_type!r}: pass target_modules")
            target_modules = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type]
        settings = {"r": r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "target_modules": list(target_modules)}
        self._inject_lora(settings)
        self.config.lora = settings

    def _inject_lora(self, settings: dict) -> None:
        # try/except: transformers' check_imports skips imports inside try blocks, so a checkpoint
        # without adapters loads with trust_remote_code where peft is not installed
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as err:
            raise ImportError("LoRA needs peft: pip install peft") from err

        inject_adapter_in_model(LoraConfig(**settings), self.lm)

    @contextlib.contextmanager
    def adapters_disabled(self):
        """The LM without its LoRA adapters (one set of base weights serves item encoding)."""
        layers = [m for m in self.lm.modules() if hasattr(m, "enable_adapters") and hasattr(m, "lora_A")]
        grads = {name: p.requires_grad for name, p in self.lm.named_parameters() if "lora_" in name}
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            for name, p in self.lm.named_parameters():  # enable_adapters resets requires_grad: restore the stage's
                if name in grads:
                    p.requires_grad_(grads[name])

    # -- catalog ------------------------------------------------------------------------------------
    def set_catalog(self, item_token_ids: torch.Tensor, item_detail_ids: torch.Tensor) -> None:
        """Store the catalog's sequence-text tokens [num_items, <= max_item_tokens] and prefix +
        detail-text tokens [num_items, <= max_item_tokens + 1] (both -1 padded; the processor's
        `item_token_table()` and `item_detail_table()`). Item vectors are recomputed on next use."""
        for name, table, buffer in (("item token", item_token_ids, self.item_token_ids), ("item detail", item_detail_ids, self.item_detail_ids)):
            table = torch.as_tensor(table, dtype=torch.long)
            if table.shape[0] != self.config.num_items:
                raise ValueError(f"catalog size mismatch: {table.shape[0]} {name} rows for num_items={self.config.num_items}")
            if table.shape[1] > buffer.shape[1]:
                raise ValueError(f"{name} rows are {table.shape[1]} tokens long, more than the model's {buffer.shape[1]}")
            if bool((table[:, 0] < 0).any()):
                raise ValueError(f"item {int((table[:, 0] < 0).nonzero()[0])} has no {name} tokens")
            full = torch.full_like(buffer, -1)
            full[:, : table.shape[1]] = table
            buffer.copy_(full)
        self.item_vectors_fingerprint.fill_(float("nan"))
        self._trie, self._mapper = None, None

    def _check_catalog(self) -> None:
        if bool((self.item_token_ids[:, 0] < 0).any()):
            raise ValueError("the item token tables are empty: call set_catalog (the training recipe does) first")

    @property
    def trie(self) -> TokenTrie:
        """The catalog trie over sequence-text tokens + separator (built once, on the model's device).
        Items with the same text share a leaf, which names the first of them."""
        if self._trie is None:
            self._check_catalog()
            sep = torch.tensor(self.config.separator_token_ids, dtype=torch.long, device=self.item_token_ids.device)
            if sep.numel() == 0:
                raise ValueError("trie decoding needs the separator tokens (config.separator_token_ids)")
            rows = self.item_token_ids
            lengths = (rows >= 0).sum(1)
            table = torch.full((rows.shape[0], rows.shape[1] + sep.numel()), -1, dtype=torch.long, device=rows.device)
            table[:, : rows.shape[1]] = rows
            cols = lengths[:, None] + torch.arange(sep.numel(), device=rows.device)
            table.scatter_(1, cols, sep.expand(rows.shape[0], -1))
            vocab = self.get_input_embeddings().weight.shape[0]
            self._trie = TokenTrie(table, vocab, duplicates="first").to(self.item_token_ids.device)
        return self._trie

    @property
    def item_mapper(self) -> CosineItemMapper:
        """Cosine item mapping (eq. 12) over max-pooled input embeddings of every item's text;
        rebuilt when the input embeddings change (stage 2 tunes them)."""
        weight = self.get_input_embeddings().weight.detach()
        # content, not the version counter: fused optimizers write in place without bumping it
        key = (weight.data_ptr(), weight.device, float(weight.sum(dtype=torch.float64)),
               float(torch.linalg.vector_norm(weight, dtype=torch.float64)))
        if self._mapper is None or self._mapper[0] != key:
            self._check_catalog()
            stops = [list(self.config.separator_token_ids)] if self.config.separator_token_ids else []
            eos = self.config.text_config.eos_token_id
            stops += [[e] for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
            mapper = CosineItemMapper(self.item_token_ids, weight, stops, pad_token_id=self.generation_config.pad_token_id)
            self._mapper = (key, mapper)
        return self._mapper[1]

    def load_state_dict(self, *args, **kwargs):
        self._trie, self._mapper = None, None
        return super().load_state_dict(*args, **kwargs)

    # -- item vectors (eq. 5) -----------------------------------------------------------------------
    def _vector_sources(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(knowledge-prompt parameters, LM parameters other than LoRA): what h_i depend on."""
        prompt = list(self.knowledge_prompt.parameters()) if self.knowledge_prompt is not None else []
        lm = [p for name, p in self.lm.named_parameters() if "lora_" not in name]
        return prompt, lm

    def _apply(self, fn, recurse=True):
        # `.to(dtype)` / `.half()` would round the float64 fingerprint along with the weights, and the
        # next staleness check would compare a float64 sum with a float32 / bf16 buffer: keep it float64
        # and let it follow the device only. The weights' new dtype then reads as stale, so h_i are
        # recomputed once in it.
        fingerprint = self.item_vectors_fingerprint.detach().clone()
        self._trie, self._mapper = None, None  # device/dtype moves rebuild them lazily
        super()._apply(fn, recurse)
        self.item_vectors_fingerprint = fingerprint.to(self.item_vectors.device)
        return self

    @torch.no_grad()
    def _fingerprint(self) -> torch.Tensor:
        out = []
        for group in self._vector_sources():
            # float64 reductions without float64 copies of the weights
            out += [sum(p.sum(dtype=torch.float64) for p in group),
                    sum(torch.linalg.vector_norm(p, dtype=torch.float64) ** 2 for p in group)]
        return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in out]).to(self.item_vectors_fingerprint.device)

    def item_vectors_stale(self) -> bool:
        """Whether the cached h_i came from other weights than the current ones: a content
        fingerprint (float64 sums) of the knowledge prompt and the LM, recomputed at every check.
        Version counters would be cheaper but miss in-place writes that do not bump them (fused
        AdamW, writes through `.data`); one pass over the weights costs far less than a generation."""
        if bool(self.item_vectors_fingerprint.isnan().any()):
            return True
        return not torch.allclose(self._fingerprint(), self.item_vectors_fingerprint, rtol=1e-7, atol=0.0)

    @torch.no_grad()
    def refresh_item_vectors(self, batch_size: int = 64) -> torch.Tensor:
        """Recompute h_i for the whole catalog (eval mode, LoRA adapters off, knowledge prompt on).

        Rows are sorted by length so batches carry little padding. Returns item_vectors [num_items, dim]."""
        self._check_catalog()
        was_training = self.training
        self.eval()
        rows = self.item_detail_ids
        lengths = (rows >= 0).sum(1)
        order = torch.argsort(lengths)
        vectors = torch.empty_like(self.item_vectors)
        with self.adapters_disabled():
            for chunk in order.split(batch_size):
                width = int(lengths[chunk].max())
                ids = rows[chunk, :width]
                vectors[chunk] = self._last_token_states(ids.clamp(min=0), ids >= 0).to(vectors.dtype)
        self.item_vectors.copy_(vectors)
        self.item_vectors_fingerprint.copy_(self._fingerprint())
        self.train(was_training)
        return self.item_vectors

    def _last_token_states(self, input_ids: torch.LongTensor, mask: torch.Tensor) -> torch.Tensor:
        """Last layer's hidden state at each row's last real token (right-padded rows), read with
        the knowledge prompt as prefix. [batch, len] -> [batch, dim]."""
        batch = input_ids.shape[0]
        cache, prefix_mask = None, mask[:, :0]
        if self.knowledge_prompt is not None:
            cache = DynamicCache(config=self.config.text_config)
            knowledge = self.knowledge_prompt()
            self._write_prefix(cache, knowledge.unsqueeze(0).expand(batch, -1, -1))
            prefix_mask = torch.ones(batch, knowledge.shape[0], dtype=mask.dtype, device=mask.device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.lm.base_model(
            input_ids=input_ids, attention_mask=torch.cat([prefix_mask, mask], dim=1).long(),
            position_ids=positions, use_cache=cache is not None, **{CACHE_ARG: cache},
        )
        last = mask.long().sum(1) - 1
        return out.last_hidden_state[torch.arange(batch, device=input_ids.device), last]

    def current_item_vectors(self) -> torch.Tensor:
        """h_i, recomputed first if stale (in eval mode) or never computed. In training the cache
        is refreshed once per epoch (LancerItemVectorsCallback): a catalog pass per step would
        cost more than the step."""
        never = bool(self.item_vectors_fingerprint.isnan().all())
        if never or (not self.training and self.item_vectors_stale()):
            self.refresh_item_vectors()
        return self.item_vectors

    # -- prefixes -----------------------------------------------------------------------------------
    def _write_prefix(self, cache, prefix: torch.Tensor) -> None:
        """Put a prefix [batch, P, width] in front of every layer's keys and values in `cache`."""
        key_values = self.layout.split(prefix.to(self.dtype))
        for layer in range(self.layout.layers):
            cache.update(key_values[layer, 0].contiguous(), key_values[layer, 1].contiguous(), layer)

    def _prompt_slots(self, prompt_item_ids: torch.Tensor | None, batch: int, device) -> torch.LongTensor:
        """prompt_item_ids [batch, <= N] -> [batch, N], -1 padded (the reasoning prompt's N slots)."""
        n = self.config.history_slots
        if prompt_item_ids is None:
            raise ValueError(
                "LANCER's reasoning prompt needs prompt_item_ids (the history items; all -1 for none): "
                "build inputs with SeqRecProcessor(method='lancer')"
            )
        ids = prompt_item_ids.to(device=device, dtype=torch.long)
        if ids.shape[0] != batch:
            raise ValueError(f"prompt_item_ids has {ids.shape[0]} rows for a batch of {batch}")
        if ids.shape[1] > n:
            if bool((ids[:, n:] >= 0).any()):
                raise ValueError(f"prompt_item_ids holds more than history_slots={n} items; keep the newest {n}")
            ids = ids[:, :n]
        if bool((ids >= self.config.num_items).any()):
            raise ValueError(f"unknown item id {int(ids.max())} in prompt_item_ids: the catalog has {self.config.num_items} items")
        return torch.nn.functional.pad(ids, (0, n - ids.shape[1]), value=-1)

    def prompt_prefix(self, batch: int, prompt_item_ids: torch.Tensor | None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """([batch, P, width] prefix rows, [batch, P] mask) for a batch: the knowledge prompt, then
        the reasoning prompt's N slots (empty slots masked)."""
        device = device or self.item_vectors.device
        knowledge = self.knowledge_prompt()
        parts = [knowledge.unsqueeze(0).expand(batch, -1, -1)]
        masks = [torch.ones(batch, knowledge.shape[0], dtype=torch.long, device=device)]
        if self.reasoning_prompt is not None:
            slots = self._prompt_slots(prompt_item_ids, batch, device)
            valid = slots >= 0
            if bool(valid.any()):
                vectors = self.current_item_vectors()[slots.clamp(min=0)]
            else:  # e.g. knowledge-stage rows: every slot is masked, no vector is needed
                vectors = torch.zeros(batch, slots.shape[1], self.item_vectors.shape[1], device=device, dtype=knowledge.dtype)
            parts.append(self.reasoning_prompt(vectors.to(knowledge.dtype), knowledge))
            masks.append(valid.long())
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def _slot_visibility_mask(self, text_mask, prefix_mask, slots_visible, ref) -> torch.Tensor:
        """A 4D additive mask [batch, 1, seq, prefix + seq]: the knowledge prompt for every token,
        reasoning slot j for the tokens at or after the end of item j's text (`slots_visible`, a
        per-token count), the text causal over its real tokens. Text tokens only see earlier text,
        so no token learns a slot's content through another token either."""
        implementation = getattr(self.config.text_config, "_attn_implementation", None)
        if implementation not in (None, "eager", "sdpa"):
            raise ValueError(
                f"prompt_slots_visible is passed to the LM as a 4D mask, which needs attn_implementation "
                f"'sdpa' or 'eager', not {implementation!r}"
            )
        batch, length = text_mask.shape[0], slots_visible.shape[1]
        if slots_visible.shape != (batch, length) or text_mask.shape[1] != length:
            raise ValueError(f"prompt_slots_visible has shape {tuple(slots_visible.shape)}, the text {tuple(text_mask.shape)}")
        knowledge = self.config.num_knowledge_tokens
        slots = torch.arange(prefix_mask.shape[1] - knowledge, device=ref.device)
        real = text_mask.bool()
        text = torch.ones(length, length, dtype=torch.bool, device=ref.device).tril()[None] & real[:, None, :]
        text |= torch.eye(length, dtype=torch.bool, device=ref.device)[None]  # a padded row still sees itself
        reasoning = (slots[None, None, :] < slots_visible.to(ref.device)[:, :, None]) & prefix_mask[:, None, knowledge:].bool()
        visible = torch.cat([prefix_mask[:, None, :knowledge].bool().expand(-1, length, -1), reasoning, text], dim=-1)
        dtype = self.lm.dtype
        return torch.zeros(visible.shape, dtype=dtype, device=ref.device).masked_fill(~visible, torch.finfo(dtype).min)[:, None]

    # -- forward --------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prompt_item_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        history_item_ids: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        prompt_slots_visible: torch.LongTensor | None = None,
        **kwargs,
    ):
        """
        input_ids, attention_mask: [batch, seq] the text (left or right padded). During cached
            generation, input_ids are the new tokens and attention_mask covers every text token so far.
        prompt_item_ids: [batch, <= N] the items whose vectors build the reasoning prompt (-1 = empty).
        labels: [batch, seq] token labels (-100 = ignore); the LM shifts them (eq. 2).
        history_item_ids: accepted and ignored (the processor emits it for recommend).
        prompt_slots_visible: [batch, seq] (training rows) how many reasoning-prompt slots each text
            token attends (slot j once the text has read item j; the processor's prompt_visibility).
            Without it every token attends every real slot, as in generation.
        logits_to_keep: as in transformers' causal LMs (generation asks for the last position only). In
            training mode with labels, logits cover only the columns from the one before the first label.
        The KV cache (`cache`, or `past_key_values` before transformers 5.24) gets the prefixes
        at the first step; other kwargs go to the LM. Returns the LM's CausalLMOutputWithPast.
        """
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else legacy
        if use_cache is False:
            cache = None  # a cache handed back by an earlier uncached step would hold the prefix twice
        kwargs.pop("cache_position", None)  # generation counts text tokens only; the LM derives it from the cache
        ref = input_ids if input_ids is not None else inputs_embeds
        batch, length = ref.shape[:2]
        num_prefix = self.config.num_prefix_tokens
        cached = cache.get_seq_length() if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, max(cached - num_prefix, 0) + length, dtype=torch.long, device=ref.device)
        if position_ids is None:
            # text positions start at 0 after left padding, whatever the prefix length
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
        # (generation only: the shortcut returns logits and cache, nothing else)
        plain = use_cache is not False and not kwargs.get("output_hidden_states") and not kwargs.get("output_attentions")
        if cached == 0 and labels is None and input_ids is not None and not torch.is_grad_enabled() and plain:
            repeats = repeat_factor(input_ids, attention_mask, position_ids, prompt_item_ids)
            if repeats > 1:
                # beam search copies each prompt num_beams times before the first step: run the
                # prompt once per user and copy the result (the cache and the logits) instead
                rows = torch.arange(0, batch, repeats, device=ref.device)
                out = self.forward(
                    input_ids=input_ids[rows], attention_mask=attention_mask[rows], position_ids=position_ids[rows],
                    prompt_item_ids=prompt_item_ids[rows] if prompt_item_ids is not None else None,
                    use_cache=True, logits_to_keep=logits_to_keep, **kwargs,
                )
                for layer in out[CACHE_ARG].layers:
                    layer.batch_repeat_interleave(repeats)
                return type(out)(logits=out.logits.repeat_interleave(repeats, dim=0), **{CACHE_ARG: out[CACHE_ARG]})
        if num_prefix:
            if cached == 0:
                if cache is None:
                    cache = DynamicCache(config=self.config.text_config)
                elif not isinstance(cache, DynamicCache):
                    # a static/offloaded cache is sized for the text alone: the prompts would not fit
                    raise ValueError(
                        f"LANCER writes its prompts into a DynamicCache, not a {type(cache).__name__}: "
                        "generate without cache_implementation (or with 'dynamic')"
                    )
                prefix, prefix_mask = self.prompt_prefix(batch, prompt_item_ids, device=ref.device)
                self._write_prefix(cache, prefix)
            elif self.reasoning_prompt is not None:
                prefix_mask = torch.cat([
                    torch.ones(batch, self.config.num_knowledge_tokens, dtype=torch.long, device=ref.device),
                    (self._prompt_slots(prompt_item_ids, batch, ref.device) >= 0).long(),
                ], dim=1)
            else:
                prefix_mask = torch.ones(batch, num_prefix, dtype=torch.long, device=ref.device)
            if prompt_slots_visible is not None and cached == 0 and self.reasoning_prompt is not None:
                attention_mask = self._slot_visibility_mask(attention_mask, prefix_mask, prompt_slots_visible, ref)
            else:
                attention_mask = torch.cat([prefix_mask, attention_mask.long()], dim=1)
        if self.training and labels is not None and isinstance(logits_to_keep, int) and logits_to_keep == 0:
            # the LM head (vocab x hidden per position) costs about as much as all the blocks: in training,
            # score only the columns from the one before the first label on (left padding puts every row's
            # labels at the end); the loss is the same, the head's cost falls to the labelled share
            labelled = (labels != -100).any(dim=0).nonzero()
            keep = length - int(labelled[0]) + 1 if len(labelled) else length
            if keep < length:
                logits_to_keep, labels = keep, labels[:, -keep:]
        out = self.lm(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep, **{CACHE_ARG: cache}, **kwargs,
        )
        if use_cache is False and out.get(CACHE_ARG) is not None:
            # the LM returns the cache it was given (here: only our prefix); uncached generation must not reuse it
            out = type(out)(**{k: v for k, v in out.items() if k != CACHE_ARG})
        return out

    # -- generation -----------------------------------------------------------------------------------
    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate` with the prompts in the KV cache; pass `prompt_item_ids`."""
        kwargs.pop("history_item_ids", None)
        return super().generate(*args, **kwargs)

    def trie_logits_processor(self, prompt_length: int) -> TrieConstrainedLogitsProcessor:
        """Keeps every beam on the catalog trie; `prompt_length` = input_ids.shape[1] (left-padded prompts)."""
        return TrieConstrainedLogitsProcessor(self.trie, prefix_length=prompt_length, eos_token_id=self.item_end_token_id)

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        prompt_item_ids: torch.LongTensor | None = None,
        top_k: int = 10,
        num_beams: int | None = None,
        decode: str | None = None,
        strategy: str = "beam_search",
        exclude_history: bool = False,
        history_item_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> LancerRecommendationOutput:
        """Generate the next item's text and map it to catalog items (§3.4).

        decode: "cosine" (eq. 12; default from the config) or "trie" (beams kept on the catalog).
        strategy: "beam_search" / "beam_sample" (beams >= top_k, each mapped to its top-1 item,
            duplicates dropped keeping beam order) or "greedy" / "sample" (one text; cosine
            mapping ranks the catalog by similarity to it, the trie gives one item).
        Other kwargs (max_new_tokens, temperature, logits_processor, ...) go to `generate`.
        """
        decode = decode or self.config.decode
        if decode not in ("cosine", "trie"):
            raise ValueError(f"decode must be 'cosine' or 'trie', got {decode!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if exclude_history and history_item_ids is None:
            raise ValueError("exclude_history=True needs history_item_ids (the processor returns them)")
        self._check_catalog()
        beams = strategy.startswith("beam")
        num_beams = max(num_beams or self.config.beam_size, top_k, 2) if beams else 1
        if beams:
            for key, value in ITEM_BEAM_SEARCH.items():  # also for checkpoints saved with another generation config
                kwargs.setdefault(key, value)
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        if decode == "trie":
            processors.append(self.trie_logits_processor(input_ids.shape[1]))
        out = self.generate(
            input_ids=input_ids, attention_mask=attention_mask, prompt_item_ids=prompt_item_ids,
            num_beams=num_beams, num_return_sequences=num_beams, do_sample=strategy.endswith("sample"),
            logits_processor=processors, output_scores=True, return_dict_in_generate=True, **kwargs,
        )
        batch = input_ids.shape[0]
        generated = out.sequences[:, input_ids.shape[1]:]
        history = history_item_ids if exclude_history else None
        if decode == "trie":
            items = self.trie.items_of(generated)
            similarity = None
        else:
            items, similarity = self.item_mapper.map(generated)
        items = items.to(input_ids.device).view(batch, num_beams)
        if beams or decode == "trie":
            if beams:
                scores = out.sequences_scores.view(batch, num_beams)
            else:  # one text: its total log-probability, up to its end token (a row that ended before
                # the longest one is padded, and the trie gives its padding -inf)
                steps = self.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
                eos = kwargs.get("eos_token_id", self.generation_config.eos_token_id)
                eos = [] if eos is None else eos if isinstance(eos, list) else [eos]
                ended = torch.isin(generated, torch.tensor(eos, dtype=torch.long, device=generated.device))
                after_end = (ended.long().cumsum(1) - ended.long()) > 0
                scores = steps.masked_fill(after_end, 0.0).sum(-1).view(batch, 1)
            item_ids, ranked, num_valid = rank_beams(items, scores, top_k, history)
        else:
            # one text, cosine: the catalog ranked by similarity to it (the paper's Sample / Greedy)
            sims = self.item_mapper.similarities(generated).to(input_ids.device)
            empty = items.view(batch) < 0
            if history is not None:
                hist = history.to(sims.device)
                rows = torch.arange(batch, device=sims.device)[:, None].expand_as(hist)
                keep = hist >= 0
                sims = sims.index_put((rows[keep], hist[keep]), torch.tensor(float("-inf"), device=sims.device))
            ranked, item_ids = sims.topk(min(top_k, sims.shape[1]), dim=1)
            item_ids = torch.where(empty[:, None] | ranked.isinf(), torch.full_like(item_ids, -1), item_ids)
            ranked = torch.where(item_ids >= 0, ranked, torch.full_like(ranked, float("-inf")))
            if item_ids.shape[1] < top_k:
                pad = top_k - item_ids.shape[1]
                item_ids = torch.nn.functional.pad(item_ids, (0, pad), value=-1)
                ranked = torch.nn.functional.pad(ranked, (0, pad), value=float("-inf"))
            num_valid = (~empty).long()
        valid_items = torch.where(items >= 0, items, torch.full_like(items, -1))
        num_distinct = torch.tensor(
            [len(set(row) - {-1}) for row in valid_items.tolist()], dtype=torch.long, device=input_ids.device
        )
        return LancerRecommendationOutput(
            item_ids=item_ids, scores=ranked, num_valid=num_valid,
            num_generated=torch.full((batch,), num_beams, dtype=torch.long, device=input_ids.device),
            num_distinct=num_distinct,
        )


LancerConfig.register_for_auto_class()
LancerForSeqRec.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["LancerForSeqRec", "LancerPreTrainedModel", "LancerRecommendationOutput", "PrefixLayout"]
