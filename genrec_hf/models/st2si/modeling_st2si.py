"""ST2SI: sequence of item texts -> sequence of item ids.

A decoder-only LM reads `T_1 [Q] T_2 [Q] ... T_n [Q]` (multi-query input, eq. 2); the item
linear projection (ILP, eq. 5) maps the last-layer hidden state at each [Q] to logits over the
whole catalog, trained with cross-entropy on the next item at every query (eq. 3, 7).

Self-contained (imports only torch, transformers and its own configuration), so a saved folder
loads with `trust_remote_code=True` where genrec_hf is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_st2si import ST2SIConfig
from .losses import labelled_cross_entropy
from .saving import SafetensorsOnlyLoading, give_weights_the_umask_mode, public_name
from .scoring import top_k_items


@dataclass
class ST2SIOutput(ModelOutput):
    """
    loss: cross-entropy over labelled queries (when `labels` is given).
    logits: FloatTensor [batch, num_queries, num_items] (or [batch, num_items] for 2-D
        `query_hidden_states`): ILP logits at each query position.
    query_mask: BoolTensor [batch, num_queries]: which query slots are real (rows hold
        different numbers of queries).
    query_hidden_states: FloatTensor [batch, num_queries, hidden]: backbone states at the queries
        (with `output_query_states=True`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    query_mask: torch.BoolTensor | None = None
    query_hidden_states: torch.FloatTensor | None = None


@dataclass
class ST2SIRecommendationOutput(ModelOutput):
    """item_ids: LongTensor [batch, top_k], catalog ids best first (-1 pads where exclude_history
    leaves fewer than top_k items); scores: FloatTensor [batch, top_k] (-inf at the pads)."""

    item_ids: torch.LongTensor | None = None
    scores: torch.FloatTensor | None = None
    num_valid: torch.LongTensor | None = None
    num_generated: torch.LongTensor | None = None


def backbone_hidden_size(text_config) -> int:
    """Width of the backbone's last hidden state (OPT may project it down to word_embed_proj_dim)."""
    for name in ("word_embed_proj_dim", "hidden_size", "n_embd", "d_model"):
        value = getattr(text_config, name, None)
        if value:
            return value
    raise ValueError(f"cannot tell the hidden size of a {type(text_config).__name__}")


def backbone_max_positions(text_config) -> int | None:
    """Longest input the backbone's position embeddings allow (None: no fixed limit known)."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, name, None)
        if value:
            return int(value)
    return None


def gather_queries(hidden: torch.Tensor, is_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the query positions of each row, left to right.

    hidden: [batch, seq, hidden]; is_query: BoolTensor [batch, seq].
    Returns states [batch, max_queries, hidden] and their mask [batch, max_queries].
    """
    counts = is_query.sum(dim=1)
    num_queries = int(counts.max()) if counts.numel() else 0
    # a stable sort puts each row's query positions first, in their original order
    order = torch.sort((~is_query).to(torch.int8), dim=1, stable=True).indices[:, :num_queries]
    states = hidden.gather(1, order.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    mask = torch.arange(num_queries, device=hidden.device)[None, :] < counts[:, None]
    return states, mask


# where decoder-only backbones keep their transformer layers (Llama / Mistral / Qwen, OPT, GPT-2)
LAYER_PATHS = ("layers", "decoder.layers", "h")


def decoder_layers(backbone) -> nn.ModuleList:
    """The backbone's ModuleList of transformer layers, bottom first."""
    for path in LAYER_PATHS:
        module = backbone
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"tune_mode='top_k' cannot find the transformer layers of a {type(backbone).__name__} "
                     f"(looked for {', '.join(LAYER_PATHS)})")


class _SkipLayer(nn.Module):
    """Stands in for a frozen lower layer whose output is given (top-k tuning): returns its input."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _LowerStatesReady(Exception):
    """Raised by the capture hook: the states entering the first tuned layer are known, the rest of the pass is not needed."""


def _replace_hidden_states(args: tuple, kwargs: dict, states: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (states, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": states}


class ST2SIPreTrainedModel(SafetensorsOnlyLoading, PreTrainedModel):
    config_class = ST2SIConfig
    base_model_prefix = "st2si"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        out = super().save_pretrained(save_directory, *args, **kwargs)
        give_weights_the_umask_mode(save_directory)
        return out

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and module is getattr(self, "ilp", None):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class ST2SIForItemPrediction(ST2SIPreTrainedModel, GenerationMixin):
    """Backbone + item linear projection (ILP) over the catalog.

    Inputs come from `SeqRecProcessor(method="st2si")`: `input_ids` / `attention_mask` of the
    multi-query text, optional `labels` [batch, num_queries] (next item at each query, -100 =
    ignore). With a frozen backbone (`tune_mode="ilp"`), precomputed `query_hidden_states` can
    replace the text: the backbone then never runs, which is what makes ILP tuning cheap.
    """

    def __init__(self, config: ST2SIConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if config.text_config is None:
            raise ValueError("ST2SIConfig.text_config is required: the backbone's config")
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.text_config)
        self.ilp = nn.Linear(backbone_hidden_size(config.text_config), config.num_items, bias=config.ilp_bias)
        self.post_init()
        self.set_tune_mode(config.tune_mode)

    @classmethod
    def from_backbone(cls, backbone: PreTrainedModel, num_items: int, query_token_id: int, vocab_size: int | None = None, **config_kwargs):
        """Wrap a loaded (pretrained) decoder: `backbone` is a base model (AutoModel), not a *ForCausalLM."""
        backbone = backbone.base_model  # *ForCausalLM -> its decoder; a base model is itself
        # a GGUF-loaded backbone is flagged as quantized and refuses to save; it is plain float once loaded
        if getattr(backbone.config, "quantization_config", None) is not None:
            delattr(backbone.config, "quantization_config")
        backbone.hf_quantizer = None
        if vocab_size is not None and vocab_size != backbone.get_input_embeddings().weight.shape[0]:
            backbone.resize_token_embeddings(vocab_size, mean_resizing=True)
        attn_implementation = backbone.config._attn_implementation
        config = ST2SIConfig(text_config=backbone.config, num_items=num_items, query_token_id=query_token_id, **config_kwargs)
        # the new config's init resets its sub-configs' attention implementation; keep the backbone's
        config.text_config._attn_implementation = attn_implementation
        config.text_config._name_or_path = public_name(backbone.config._name_or_path)  # saved: never a local path
        return cls(config, backbone=backbone)

    # -- tuning modes ---------------------------------------------------------------------------
    def set_tune_mode(self, mode: str) -> None:
        """'full': everything trains; 'ilp': only the item linear projection trains (§3.4.2);
        'top_k': the top `config.tune_layers` layers, the modules after them and the ILP train."""
        if mode not in ("full", "ilp", "top_k"):
            raise ValueError(f"tune_mode must be 'full', 'ilp' or 'top_k', got {mode!r}")
        self.config.tune_mode = mode
        self.backbone.requires_grad_(mode == "full")
        if mode == "top_k":
            for name, param in self.backbone.named_parameters():
                param.requires_grad_(self._is_tuned(name))
        self.ilp.requires_grad_(True)
        self.train(self.training)

    def _split(self) -> tuple[nn.ModuleList, int]:
        """(the backbone's layers, index of the first tuned layer) for top-k tuning."""
        layers = decoder_layers(self.backbone)
        k = self.config.tune_layers
        if k > len(layers):
            raise ValueError(f"tune_layers={k} but the backbone has {len(layers)} layers")
        return layers, len(layers) - k

    def _is_tuned(self, parameter_name: str) -> bool:
        """Top-k tuning: a top layer's parameter, or one outside the layers that is not an embedding
        (the final norm, OPT's project_out): what runs after the frozen lower layers."""
        layers, first = self._split()
        layer_prefix = next(n for n, m in self.backbone.named_modules() if m is layers) + "."
        if parameter_name.startswith(layer_prefix):
            return int(parameter_name[len(layer_prefix):].split(".")[0]) >= first
        owner = self.backbone.get_submodule(parameter_name.rsplit(".", 1)[0]) if "." in parameter_name else self.backbone
        return not isinstance(owner, nn.Embedding)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.tune_mode == "ilp":
            self.backbone.eval()  # frozen: no dropout, so cached and recomputed states are the same
        elif self.config.tune_mode == "top_k":
            layers, first = self._split()
            for layer in layers[:first]:
                layer.eval()  # frozen lower layers, as their cached outputs were computed
        return self

    # -- top-k tuning: the frozen lower part computed once ------------------------------------------
    @torch.no_grad()
    def lower_hidden_states(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.FloatTensor:
        """[batch, seq, hidden]: the states entering the first tuned layer (top-k tuning), what
        the frozen embeddings and lower layers compute; the tuned layers do not run."""
        layers, first = self._split()
        captured = {}

        def capture(module, args, kwargs):
            captured["states"] = args[0] if args else kwargs["hidden_states"]
            raise _LowerStatesReady

        handle = layers[first].register_forward_pre_hook(capture, with_kwargs=True)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            self.backbone(input_ids=input_ids, attention_mask=attention_mask if attention_mask is not None else torch.ones_like(input_ids))
        except _LowerStatesReady:
            pass
        finally:
            handle.remove()
            self.backbone.train(was_training)
        return captured["states"]

    def _run_from_lower_states(self, input_ids, attention_mask, lower_hidden_states):
        """The backbone's last hidden state with the lower layers skipped and `lower_hidden_states`
        fed to the first tuned layer. The backbone's own forward still builds the masks and
        position embeddings from `input_ids`, so the tuned layers see exactly what they would see."""
        layers, first = self._split()
        if lower_hidden_states.shape[:2] != input_ids.shape:
            raise ValueError(f"lower_hidden_states {tuple(lower_hidden_states.shape)} do not match input_ids {tuple(input_ids.shape)}")
        states = lower_hidden_states.to(self.ilp.weight.device, self.backbone.dtype)
        handle = layers[first].register_forward_pre_hook(lambda m, a, k: _replace_hidden_states(a, k, states), with_kwargs=True)
        lower = [layers[i] for i in range(first)]
        for i in range(first):
            layers[i] = _SkipLayer()
        try:
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            for i, layer in enumerate(lower):
                layers[i] = layer
            handle.remove()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    # -- forward ----------------------------------------------------------------------------------
    def encode_queries(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                       lower_hidden_states: torch.FloatTensor | None = None):
        """Backbone states at the query tokens: ([batch, max_queries, hidden], mask [batch, max_queries]).

        lower_hidden_states: [batch, seq, hidden] from `lower_hidden_states()` (top-k tuning): only
        the tuned layers run."""
        if self.config.query_token_id is None:
            raise ValueError("config.query_token_id is not set: build the model with the processor's query token id")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        limit = backbone_max_positions(self.config.text_config)
        if limit is not None and input_ids.shape[1] > limit:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens is longer than the backbone's {limit} positions: "
                f"build the processor with max_length={limit} (or fewer max_items / max_item_tokens)"
            )
        if lower_hidden_states is not None:
            if self.config.tune_mode != "top_k":
                raise ValueError("lower_hidden_states are for tune_mode='top_k' (frozen lower layers)")
            hidden = self._run_from_lower_states(input_ids, attention_mask, lower_hidden_states)
        else:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        is_query = (input_ids == self.config.query_token_id) & attention_mask.bool()
        if not bool(is_query.any(dim=1).all()):
            raise ValueError(
                f"every row needs at least one query token (id {self.config.query_token_id}); "
                "build inputs with SeqRecProcessor(method='st2si')"
            )
        return gather_queries(hidden, is_query)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        query_hidden_states: torch.FloatTensor | None = None,
        query_mask: torch.BoolTensor | None = None,
        history_item_ids: torch.LongTensor | None = None,
        lower_hidden_states: torch.FloatTensor | None = None,
        output_query_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ST2SIOutput:
        """
        input_ids, attention_mask: [batch, seq] multi-query text.
        labels: LongTensor [batch, num_queries] (or [batch] with 2-D features), -100 = ignore.
        query_hidden_states: [batch, num_queries, hidden] or [batch, hidden] precomputed backbone
            states (ILP tuning); used instead of input_ids.
        history_item_ids: [batch, length] history catalog ids (-1 pads); only `recommend` uses it.
        lower_hidden_states: [batch, seq, hidden] precomputed states entering the first tuned layer
            (tune_mode="top_k"): the frozen lower layers are skipped.
        output_query_states: also return the backbone states at the queries.
        """
        if query_hidden_states is None:
            if input_ids is None:
                raise ValueError("pass input_ids (multi-query text) or query_hidden_states")
            query_hidden_states, query_mask = self.encode_queries(input_ids, attention_mask, lower_hidden_states)
        elif self.config.tune_mode != "ilp" and self.training:
            raise ValueError("training on precomputed query_hidden_states needs tune_mode='ilp' (a frozen backbone)")
        logits = self.ilp(query_hidden_states.to(self.ilp.weight.dtype))
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if query_mask is not None:
                labels = labels.masked_fill(~query_mask.to(labels.device), -100)
            if labels.shape != logits.shape[:-1]:
                raise ValueError(f"labels have shape {tuple(labels.shape)}, logits {tuple(logits.shape[:-1])} (+ items)")
            bad = (labels != -100) & ((labels < 0) | (labels >= self.config.num_items))
            if bool(bad.any()):
                raise ValueError(f"unknown item id {int(labels[bad][0])} in labels: the ILP has {self.config.num_items} items")
            loss = labelled_cross_entropy(logits, labels, kwargs.get("num_items_in_batch"))
        return ST2SIOutput(
            loss=loss,
            logits=logits,
            query_mask=query_mask,
            query_hidden_states=query_hidden_states if output_query_states else None,
        )

    # -- recommendation ---------------------------------------------------------------------------
    @torch.no_grad()
    def item_scores(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.FloatTensor:
        """Full-catalog logits [batch, num_items] from the last query of each row."""
        states, mask = self.encode_queries(input_ids, attention_mask)
        last = mask.sum(dim=1) - 1
        return self.ilp(states[torch.arange(states.shape[0], device=states.device), last])

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        top_k: int = 10,
        exclude_history: bool = False,
        history_item_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> ST2SIRecommendationOutput:
        """Top-k catalog items per row, ranked over the whole catalog (design.md §2)."""
        scores = self.item_scores(input_ids, attention_mask).float()
        item_ids, top_scores = top_k_items(scores, top_k, exclude_history, history_item_ids)
        return ST2SIRecommendationOutput(item_ids=item_ids, scores=top_scores)


ST2SIConfig.register_for_auto_class()
ST2SIForItemPrediction.register_for_auto_class("AutoModel")

__all__ = ["ST2SIForItemPrediction", "backbone_max_positions", "decoder_layers", "ST2SIOutput", "ST2SIPreTrainedModel", "ST2SIRecommendationOutput"]
