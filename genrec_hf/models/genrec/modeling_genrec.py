"""GenRec: BART with user/item ID embeddings, masked-item objective, beam search over items.

Encoder input (eq. 1): [BEG] user_u item_a item_b ... [MASK] [END]. Each token's embedding is
token + position + the ID embedding of the entity it spells (eq. 2): every sub-token of
`user_123` gets user 123's row of the *user* table, every sub-token of `item_456` gets that
item's row of the *item* table; other tokens get none. The decoder generates the masked item's
text; `recommend` runs beam search kept on the catalog trie and maps beams to catalog ids.

Self-contained (torch, transformers and same-folder files), so a saved folder loads with
`trust_remote_code=True` where genrec_hf is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import BartForConditionalGeneration, GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.bart.modeling_bart import shift_tokens_right
from transformers.utils import ModelOutput

from .configuration_genrec import GenRecConfig
from .losses import labelled_cross_entropy
from .saving import SafetensorsOnlyLoading, give_weights_the_umask_mode, public_name
from .trie import ITEM_BEAM_SEARCH, TokenTrie, TrieConstrainedLogitsProcessor, rank_beams


@dataclass
class GenRecRecommendationOutput(ModelOutput):
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


class GenRecIdTable(nn.Embedding):
    """A user or item ID table. Its own class so `_init_weights` matches the tables themselves:
    transformers 5 never visits a container without parameters of its own (design.md §7)."""


class GenRecIdEmbedding(nn.Module):
    """Adds the user or item ID embedding to the tokens that spell an entity (eq. 2).

    Two separate tables, shared neither with each other nor with the vocabulary. `scale`
    multiplies the looked-up vector (1.0 = eq. 2 as written; the public GenRec code uses
    1/sqrt(d_model)).
    """

    def __init__(self, num_users: int, num_items: int, dim: int, scale: float = 1.0):
        super().__init__()
        self.user_embeddings = GenRecIdTable(num_users + 1, dim)  # row 0: the unknown user
        self.item_embeddings = GenRecIdTable(num_items, dim)
        self.scale = scale

    def forward(self, token_user_ids: torch.LongTensor | None, token_item_ids: torch.LongTensor | None, like: torch.Tensor) -> torch.Tensor:
        """token_*_ids: [batch, seq], the entity row of each token or -1. Returns [batch, seq, dim]."""
        out = torch.zeros_like(like)
        for ids, table in ((token_user_ids, self.user_embeddings), (token_item_ids, self.item_embeddings)):
            if ids is None:
                continue
            if bool((ids >= table.num_embeddings).any()):
                raise ValueError(f"ID {int(ids.max())} is outside a table of {table.num_embeddings} rows")
            hit = (ids >= 0).unsqueeze(-1)
            out = out + table(ids.clamp(min=0)).to(like.dtype) * hit
        return out * self.scale if self.scale != 1.0 else out


class GenRecEncoder(nn.Module):
    """BART's encoder behind the cross-modal input embedding; what `get_encoder()` returns."""

    main_input_name = "input_ids"

    def __init__(self, model: "GenRecForConditionalGeneration"):
        super().__init__()
        self.encoder = model.bart.get_encoder()
        self.id_embedding = model.id_embedding

    def forward(self, input_ids=None, attention_mask=None, token_user_ids=None, token_item_ids=None, inputs_embeds=None, **kwargs):
        if input_ids is not None and (token_user_ids is None or token_item_ids is None):
            # without them the model silently drops eq. 2's ID embeddings: a different model
            raise ValueError(
                "GenRec needs token_user_ids and token_item_ids with input_ids (the entity of each token): "
                "build inputs with SeqRecProcessor(method='genrec')"
            )
        if inputs_embeds is None:
            inputs_embeds = self.encoder.embed_tokens(input_ids)  # scaled token embedding
        inputs_embeds = inputs_embeds + self.id_embedding(token_user_ids, token_item_ids, inputs_embeds)
        kwargs = {k: v for k, v in kwargs.items() if k in ("output_attentions", "output_hidden_states", "return_dict")}
        return self.encoder(attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)  # + positions


class GenRecPreTrainedModel(SafetensorsOnlyLoading, PreTrainedModel):
    config_class = GenRecConfig
    base_model_prefix = "genrec"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        # remote code: list AutoModel next to the AutoModelForSeq2SeqLM entry register_for_auto_class writes
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", f"modeling_genrec.{type(self).__name__}")
        self.config.auto_map = auto_map
        out = super().save_pretrained(save_directory, *args, **kwargs)
        give_weights_the_umask_mode(save_directory)
        return out

    def _init_weights(self, module):
        # the leaf tables, not their container: a module without parameters is never visited
        if isinstance(module, GenRecIdTable):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.id_init_std)


class GenRecForConditionalGeneration(GenRecPreTrainedModel, GenerationMixin):
    """GenRec on BART. Inputs from `SeqRecProcessor(method="genrec")`: input_ids, attention_mask,
    token_user_ids, token_item_ids [batch, seq] (-1 = no entity) and labels (the masked item's
    tokens + eos)."""

    def __init__(self, config: GenRecConfig, bart: BartForConditionalGeneration | None = None):
        super().__init__(config)
        if config.text_config is None:
            raise ValueError("GenRecConfig.text_config is required: a BART config")
        self.bart = bart if bart is not None else BartForConditionalGeneration(config.text_config)
        self.id_embedding = GenRecIdEmbedding(
            config.num_users, config.num_items, config.text_config.d_model, scale=config.id_embedding_scale
        )
        # every catalog item's decoder tokens (+ eos), -1 padded: the trie is built from it, and
        # saving it with the weights keeps checkpoint and catalog together
        self.register_buffer(
            "item_token_ids", torch.full((config.num_items, config.max_item_tokens), -1, dtype=torch.long), persistent=True
        )
        self._trie: TokenTrie | None = None
        self.post_init()
        text = config.text_config
        self.generation_config = GenerationConfig(
            decoder_start_token_id=text.decoder_start_token_id,
            bos_token_id=text.bos_token_id,
            eos_token_id=text.eos_token_id,
            pad_token_id=text.pad_token_id,
            num_beams=config.beam_size,
            max_new_tokens=config.max_item_tokens,
            **ITEM_BEAM_SEARCH,  # full log-probability, exact search (never stop before longer items finish)
        )

    @classmethod
    def from_bart(cls, bart: BartForConditionalGeneration, num_users: int, num_items: int, vocab_size: int | None = None, **config_kwargs):
        """Wrap a loaded (e.g. pretrained bart-base) BartForConditionalGeneration."""
        if vocab_size is not None and vocab_size != bart.get_input_embeddings().weight.shape[0]:
            bart.resize_token_embeddings(vocab_size, mean_resizing=True)
        attn_implementation = bart.config._attn_implementation
        config = GenRecConfig(text_config=bart.config, num_users=num_users, num_items=num_items, **config_kwargs)
        config.text_config._attn_implementation = attn_implementation
        config.text_config._name_or_path = public_name(bart.config._name_or_path)  # saved: never a local path
        return cls(config, bart=bart)

    def get_input_embeddings(self):
        return self.bart.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.bart.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.bart.get_output_embeddings()

    def get_encoder(self):
        return GenRecEncoder(self)

    # -- catalog -----------------------------------------------------------------------------------
    def set_item_tokens(self, item_token_ids: torch.Tensor) -> None:
        """Store the catalog's decoder token table [num_items, <= max_item_tokens] (each row ends with eos)."""
        table = torch.as_tensor(item_token_ids, dtype=torch.long)
        if table.shape[0] != self.config.num_items:
            raise ValueError(f"catalog size mismatch: {table.shape[0]} item token rows for num_items={self.config.num_items}")
        if table.shape[1] > self.config.max_item_tokens:
            raise ValueError(f"item token rows are {table.shape[1]} long, more than max_item_tokens={self.config.max_item_tokens}")
        full = torch.full_like(self.item_token_ids, -1)
        full[:, : table.shape[1]] = table
        self.item_token_ids.copy_(full)
        self._trie = None

    @property
    def trie(self) -> TokenTrie:
        """The catalog trie, built once from `item_token_ids` (tensors on the model's device)."""
        if self._trie is None:
            if bool((self.item_token_ids[:, 0] < 0).any()):
                raise ValueError("the item token table is empty: call set_item_tokens (the processor does) first")
            self._trie = TokenTrie(self.item_token_ids, self.config.text_config.vocab_size).to(self.item_token_ids.device)
        return self._trie

    def _apply(self, fn, *args, **kwargs):
        self._trie = None  # device/dtype moves rebuild the trie tensors lazily
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self._trie = None
        return super().load_state_dict(*args, **kwargs)

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_user_ids: torch.LongTensor | None = None,
        token_item_ids: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs=None,
        labels: torch.LongTensor | None = None,
        history_item_ids: torch.LongTensor | None = None,
        **kwargs,
    ):
        """
        input_ids, attention_mask, token_user_ids, token_item_ids: [batch, seq] encoder inputs.
        labels: [batch, target_len] the masked item's tokens + eos (-100 = ignore); decoder
            inputs are labels shifted right, as in BART.
        history_item_ids: accepted and ignored (the processor emits it for recommend).
        Other kwargs (cache, use_cache, ...) go to BART unchanged.
        """
        if encoder_outputs is None:
            encoder_outputs = self.get_encoder()(
                input_ids=input_ids, attention_mask=attention_mask,
                token_user_ids=token_user_ids, token_item_ids=token_item_ids, return_dict=True,
            )
        elif isinstance(encoder_outputs, tuple):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        if labels is not None:
            kwargs.setdefault("use_cache", False)  # as BART does when it is given labels: no cache in training
            if decoder_input_ids is None and kwargs.get("decoder_inputs_embeds") is None:
                text = self.bart.config
                decoder_input_ids = shift_tokens_right(labels, text.pad_token_id, text.decoder_start_token_id)
        # the loss is ours, not BART's mean: the Trainer's num_items_in_batch makes gradient accumulation
        # and data-parallel ranks give the one-batch mean (losses.py)
        out = self.bart(
            attention_mask=attention_mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            **kwargs,
        )
        if labels is not None:
            out.loss = labelled_cross_entropy(out.logits, labels, num_items_in_batch)
        return out

    # -- generation ----------------------------------------------------------------------------------
    def generate(self, *args, constrained: bool | None = None, logits_processor=None, **kwargs):
        """`GenerationMixin.generate`, kept on the catalog trie unless `constrained=False`."""
        constrained = self.config.constrained_decoding if constrained is None else constrained
        logits_processor = LogitsProcessorList(logits_processor or [])
        if constrained and not any(isinstance(p, TrieConstrainedLogitsProcessor) for p in logits_processor):
            eos = self.generation_config.eos_token_id
            eos = eos[0] if isinstance(eos, (list, tuple)) else eos
            logits_processor.append(TrieConstrainedLogitsProcessor(self.trie, prefix_length=1, eos_token_id=eos))
        kwargs.pop("history_item_ids", None)
        return super().generate(*args, logits_processor=logits_processor, **kwargs)

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_user_ids: torch.LongTensor | None = None,
        token_item_ids: torch.LongTensor | None = None,
        top_k: int = 20,
        num_beams: int | None = None,
        constrained: bool | None = None,
        exclude_history: bool = False,
        history_item_ids: torch.LongTensor | None = None,
        sequence_to_item=None,
        **kwargs,
    ) -> GenRecRecommendationOutput:
        """Beam search (beams >= top_k), beams mapped to catalog ids, duplicates and invalid beams dropped.

        sequence_to_item: optional callable (generated tokens [n, len] -> catalog ids [n]) for
        beams off the trie, e.g. `processor.format.items_from_generated`, which reads them as
        text; the pipeline passes it, so unconstrained decoding is not undercounted.
        Other kwargs (logits_processor, max_new_tokens, ...) go to `generate`.
        """
        if exclude_history and history_item_ids is None:
            raise ValueError("exclude_history=True needs history_item_ids (the processor returns them)")
        num_beams = max(num_beams or self.config.beam_size, top_k, 2)  # 1 beam would be greedy: no beam scores
        for key, value in ITEM_BEAM_SEARCH.items():  # also for checkpoints saved with another generation config
            kwargs.setdefault(key, value)
        out = self.generate(
            input_ids=input_ids, attention_mask=attention_mask,
            token_user_ids=token_user_ids, token_item_ids=token_item_ids,
            num_beams=num_beams, num_return_sequences=num_beams, constrained=constrained,
            output_scores=True, return_dict_in_generate=True, do_sample=False, **kwargs,
        )
        generated = out.sequences[:, 1:]
        items = self.trie.items_of(generated)
        if sequence_to_item is not None and bool((items < 0).any()):
            items = torch.where(items >= 0, items, sequence_to_item(generated).to(items.device))
        items = items.view(input_ids.shape[0], num_beams)
        scores = out.sequences_scores.view(input_ids.shape[0], num_beams).float()
        # when fewer hypotheses finish than beams (a catalog smaller than the beam count), beam
        # search fills the output with copies scored -1e9: not generated beams, not items
        finished = scores > -1e8
        items = items.masked_fill(~finished, -1)
        item_ids, ranked_scores, num_valid = rank_beams(items, scores, top_k, history_item_ids if exclude_history else None)
        return GenRecRecommendationOutput(
            item_ids=item_ids, scores=ranked_scores, num_valid=num_valid, num_generated=finished.sum(dim=1),
        )


GenRecConfig.register_for_auto_class()
GenRecForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = ["GenRecForConditionalGeneration", "GenRecPreTrainedModel", "GenRecRecommendationOutput"]
