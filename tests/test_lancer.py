"""LANCER (models/lancer): the prompts as a KV-cache prefix, the training stages through an
unchanged `Trainer`, item vectors (eq. 5), the reasoning prompt (eq. 6-9), cosine and trie
mapping (§3.4), the four decoding strategies, saving (remote code included), bad inputs, the
processor and its ablation variants (Table 3).

Tiny random Llama (GQA) and GPT-2 LMs on a 20-item catalog, built once per module; tests that
change a model build their own.
"""

import copy
import json
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, DynamicCache, LogitsProcessor, Trainer, TrainingArguments

from genrec_hf import SeqRecPipeline, SeqRecProcessor
from genrec_hf.backbones import tiny_config, train_tokenizer
from genrec_hf.data import ItemCatalog
from genrec_hf.generation.trie import TokenTrie
from genrec_hf.models import LancerConfig, LancerForSeqRec, LancerProcessor
from genrec_hf.models.lancer.modeling_lancer import CACHE_ARG
from genrec_hf.training.lancer import LancerCollator

FIRST = "red blue green dark light night day star moon sun river city road king queen war love story gold iron".split()
# titles of two to five words: items of different token lengths
SECOND = ["house", "tree of life", "dream", "fire in the sky", "song", "ship", "town at night", "hill", "lake of gold", "game"]
GENRES = ["Drama", "Comedy", "Action", "Horror", "Western"]
NUM_ITEMS = 20
THETA, SLOTS = 5, 4  # knowledge tokens, reasoning-prompt slots
P = THETA + SLOTS
MAX_ITEM_TOKENS = 16
HISTORIES = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]]  # the last is longer than the window (max_items=4)


def _attributes(extra_titles=()):
    titles = [f"{FIRST[i].title()} {SECOND[i % len(SECOND)]}" for i in range(NUM_ITEMS)] + list(extra_titles)
    # one to three genres: detail texts of different lengths
    return [{"title": t, "year": str(1980 + i), "genres": GENRES[i % 5:i % 5 + 1 + i % 3]} for i, t in enumerate(titles)]


def _catalog(extra_titles=()):
    attrs = _attributes(extra_titles)
    return ItemCatalog([str(100 + i) for i in range(len(attrs))], attrs)


CATALOG = _catalog()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    texts = CATALOG.texts() + CATALOG.with_template("title_year_genres").texts() + [
        "A user watched sequence of movies: a -> b ->", "item_0 item_19"]
    return train_tokenizer(texts, vocab_size=400)


def _processor(tokenizer, catalog=CATALOG, **settings):
    return LancerProcessor(tokenizer, catalog, max_items=4, max_item_tokens=MAX_ITEM_TOKENS, **settings)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return _processor(tokenizer)


def build(processor, model_type="llama", seed=0, **config):
    """A LANCER model on a tiny random LM with the processor's catalog (eval mode)."""
    torch.manual_seed(seed)
    tok = processor.tokenizer
    sizes = {"num_key_value_heads": 2} if model_type == "llama" else {}  # GQA: 2 KV heads for 4 query heads
    lm = AutoModelForCausalLM.from_config(tiny_config(
        model_type, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, **sizes))
    settings = dict(num_knowledge_tokens=THETA, history_slots=SLOTS, prompt_hidden_size=32, beam_size=6,
                    max_item_tokens=MAX_ITEM_TOKENS)
    settings.update(config)
    model = LancerForSeqRec.from_lm(lm, processor.num_items, processor.separator_ids, **settings)
    model.set_catalog(processor.item_token_table(), processor.item_detail_table())
    return model.eval()


@pytest.fixture(scope="module")
def models(processor):
    """Shared read-only models (recommend fills their item-vector cache, nothing else changes).
    Prompt weights at std 0.2, as after training: at the 0.02 init the prefix is ~1e-5 and barely
    moves the logits, so a prefix bug would hardly show."""
    return {"llama": build(processor, "llama", initializer_range=0.2), "gpt2": build(processor, "gpt2", initializer_range=0.2)}


def _text_inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "prompt_item_ids")}


def _logits(model, batch, **overrides):
    with torch.no_grad():
        return model(**{**_text_inputs(batch), **overrides}).logits


# -- 1. the prefix in the KV cache ------------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_every_layer_gets_the_prefix_in_front_of_the_text(models, processor, model_type):
    model = models[model_type]
    text = model.config.text_config
    heads = text.num_attention_heads
    kv_heads = 2 if model_type == "llama" else heads
    head_dim = text.hidden_size // heads
    assert (getattr(text, "num_key_value_heads", None) or heads) == kv_heads
    batch = processor(HISTORIES)
    length = batch["input_ids"].shape[1]
    cache = DynamicCache(config=text)
    with torch.no_grad():
        out = model(**_text_inputs(batch), use_cache=True, **{CACHE_ARG: cache})
    cache = out[CACHE_ARG]
    assert model.config.num_prefix_tokens == P
    assert len(cache.layers) == text.num_hidden_layers
    with torch.no_grad():
        prefix, mask = model.prompt_prefix(len(HISTORIES), batch["prompt_item_ids"])
    assert prefix.shape == (3, P, text.num_hidden_layers * 2 * kv_heads * head_dim)
    # knowledge tokens always visible; reasoning slots only for real history items (window of 4)
    assert mask.tolist() == [[1] * THETA + [1, 1, 1, 0], [1] * THETA + [1, 1, 0, 0], [1] * THETA + [1, 1, 1, 1]]
    per_layer = prefix.view(3, P, text.num_hidden_layers, 2, kv_heads, head_dim)
    for index, layer in enumerate(cache.layers):
        for kind, stored in enumerate((layer.keys, layer.values)):
            assert stored.shape == (3, kv_heads, P + length, head_dim)
            # the first P positions are the prompts, exactly as prompt_prefix computed them
            assert torch.equal(stored[:, :, :P], per_layer[:, :, index, kind].transpose(1, 2))
    assert out.logits.shape == (3, length, text.vocab_size)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_left_padding_does_not_change_a_row(models, processor, model_type):
    """Text positions start at 0 after the padding and the padding is masked: a short history
    batched with a long one gives the logits it gives alone."""
    model = models[model_type]
    together = processor([[1, 2, 3, 4], [5]])
    alone = processor([[5]])
    width = alone["input_ids"].shape[1]
    assert together["input_ids"].shape[1] > width
    assert torch.allclose(_logits(model, together)[1, -width:], _logits(model, alone)[0], atol=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_generation_with_and_without_cache_is_the_same(models, processor, model_type):
    model = models[model_type]
    batch = processor(HISTORIES)
    inputs = _text_inputs(batch)
    start = batch["input_ids"].shape[1]
    common = dict(**inputs, do_sample=False, max_new_tokens=6, min_new_tokens=6)  # no early end: 6 tokens compared
    for beams in (1, 3):
        cached = model.generate(**common, num_beams=beams, use_cache=True)
        uncached = model.generate(**common, num_beams=beams, use_cache=False)  # once held the prefix twice
        assert cached.shape[1] == start + 6 and torch.equal(cached, uncached), beams
    # greedy = the argmax of one forward over the whole generated text (end tokens banned, as min_new_tokens does)
    greedy = model.generate(**common, num_beams=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, 6, dtype=torch.long)], dim=1)
    logits = _logits(model, batch, input_ids=greedy, attention_mask=mask)[:, start - 1:-1]
    logits[..., model.generation_config.eos_token_id] = float("-inf")
    assert torch.equal(logits.argmax(-1), greedy[:, start:])


def test_identical_rows_share_one_prompt_pass_without_losing_outputs(models, processor):
    """Beam search repeats each prompt per beam; the model runs it once per user. A plain forward
    over identical rows must still give what it was asked for."""
    model = models["llama"]
    twice, once = processor([[1, 2], [1, 2]]), processor([[1, 2]])
    with torch.no_grad():
        shared = model(**_text_inputs(twice), use_cache=True)
        single = model(**_text_inputs(once), use_cache=True)
        asked = model(**_text_inputs(twice), output_hidden_states=True, use_cache=False)
    assert torch.allclose(shared.logits, single.logits.expand(2, -1, -1), atol=1e-6)
    assert shared[CACHE_ARG].layers[0].keys.shape[0] == 2
    assert asked.hidden_states is not None and len(asked.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert asked.get(CACHE_ARG) is None


# -- 2. training stages through an unchanged Trainer ------------------------------------------------

def _train_two_steps(model, rows, collator, output_dir):
    args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, max_steps=2, report_to="none",
                             remove_unused_columns=False, per_device_train_batch_size=2, save_strategy="no",
                             learning_rate=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    trainer.train()
    assert trainer.state.global_step == 2
    model.eval()


def _params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changed(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}


PROMPT_CORE = {"knowledge_prompt.embedding.weight", "knowledge_prompt.mlp.down.weight",
               "reasoning_prompt.query.weight", "reasoning_prompt.mlp.down.weight"}


def test_training_stages_update_only_their_parameters(processor, tmp_path):
    model = build(processor, "gpt2")
    rows = [{"history": h, "target": t} for h, t in (([1, 2, 3], 4), ([5, 6], 7), ([8, 9, 10, 11, 12], 13), ([14], 15))]

    def sequences(batch_rows):
        return processor([r["history"] for r in batch_rows], targets=[r["target"] for r in batch_rows])

    def knowledge(batch_rows):
        batch = processor.knowledge_inputs([r["item"] for r in batch_rows])
        batch["prompt_item_ids"] = torch.full((len(batch_rows), SLOTS), -1)  # no history: every slot masked
        return batch

    lm_names = {name for name, _ in model.named_parameters() if name.startswith("lm.")}
    prompt_names = {name for name, _ in model.named_parameters() if not name.startswith("lm.")}
    knowledge_names = {name for name in prompt_names if name.startswith("knowledge_prompt.")}

    # the knowledge stage (§3.2): only the knowledge prompt learns the detail texts
    model.set_stage("knowledge")
    before = _params(model)
    _train_two_steps(model, [{"item": i} for i in range(4)], knowledge, tmp_path / "knowledge")
    changed = _changed(model, before)
    assert changed == knowledge_names, changed ^ knowledge_names

    # stage 1: both prompts, the LM bit-identical
    model.set_stage("prompt")
    before = _params(model)
    _train_two_steps(model, rows, sequences, tmp_path / "prompt")
    changed = _changed(model, before)
    assert not changed & lm_names and PROMPT_CORE <= changed, changed

    # stage 2, full: the LM learns too
    model.set_stage("full")
    before = _params(model)
    _train_two_steps(model, rows, sequences, tmp_path / "full")
    changed = _changed(model, before)
    assert PROMPT_CORE <= changed and len(changed & lm_names) > len(lm_names) // 2, changed

    # stage 2, LoRA: adapters and prompts only
    model.enable_lora(r=4, lora_dropout=0.0)
    model.set_stage("lora")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == prompt_names | {
        n for n, _ in model.named_parameters() if "lora_" in n}
    before = _params(model)
    _train_two_steps(model, rows, sequences, tmp_path / "lora")
    changed = _changed(model, before)
    assert all("lora_" in n or n in prompt_names for n in changed), sorted(changed)
    assert PROMPT_CORE <= changed and any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)


def test_a_refused_stage_changes_nothing(processor):
    model = build(processor, "llama", use_knowledge_prompt=False, use_reasoning_prompt=False)
    model.set_stage("full")
    for stage in ("knowledge", "prompt"):
        with pytest.raises(ValueError, match="no prompts"):
            model.set_stage(stage)
        assert all(p.requires_grad for p in model.parameters()), f"a refused {stage!r} froze the LM"
    with pytest.raises(ValueError, match="call enable_lora"):
        model.set_stage("lora")
    with pytest.raises(ValueError, match="stage must be"):
        model.set_stage("nope")
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_is_refused_not_silently_wrong(processor):
    """A checkpointed decoder layer runs without the cache, so without the prefix."""
    model = build(processor, "llama")
    with pytest.raises(ValueError, match="does not support"):
        model.gradient_checkpointing_enable()


# -- 3. item vectors (eq. 5) ------------------------------------------------------------------------

def _by_hand(model, item):
    """h_i computed without the model's helpers: the knowledge prompt MLP, the prefix written
    layer by layer into a cache, the base LM over the item's unpadded detail row."""
    kp = model.knowledge_prompt
    knowledge = kp.mlp.down(torch.tanh(kp.mlp.up(kp.embedding.weight)))  # eq. 3: [theta, width]
    text = model.config.text_config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = text.hidden_size // heads
    per_layer = knowledge.view(THETA, text.num_hidden_layers, 2, kv_heads, head_dim)
    cache = DynamicCache(config=text)
    for layer in range(text.num_hidden_layers):
        cache.update(per_layer[:, layer, 0].transpose(0, 1)[None], per_layer[:, layer, 1].transpose(0, 1)[None], layer)
    row = model.item_detail_ids[item]
    ids = row[row >= 0][None]
    out = model.lm.base_model(input_ids=ids, attention_mask=torch.ones(1, THETA + ids.shape[1], dtype=torch.long),
                              position_ids=torch.arange(ids.shape[1])[None], use_cache=True, **{CACHE_ARG: cache})
    return out.last_hidden_state[0, -1]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_item_vectors_are_the_last_hidden_state_of_the_detail_text(processor, model_type):
    model = build(processor, model_type, initializer_range=0.2)
    with torch.no_grad():
        vectors = model.refresh_item_vectors().clone()
    assert vectors.shape == (NUM_ITEMS, model.config.text_config.hidden_size)
    distances = torch.cdist(vectors, vectors) + torch.eye(NUM_ITEMS) * 1e9
    assert float(distances.min()) > 1e-3, "two items got the same vector"
    lengths = (model.item_detail_ids >= 0).sum(1)
    assert lengths.unique().numel() > 2  # one padded batch holds items of several lengths
    detail = processor.format.detail_texts()
    assert model.item_detail_ids[0, 0] == processor.tokenizer.bos_token_id
    assert processor.tokenizer.decode(model.item_detail_ids[0, 1:lengths[0]]).strip() == detail[0]
    with torch.no_grad():
        for item in (int(lengths.argmin()), int(lengths.argmax()), 7):
            assert torch.allclose(vectors[item], _by_hand(model, item), atol=1e-5), item
            # the same through the model's own forward: every reasoning slot masked = knowledge prompt only
            row = model.item_detail_ids[item]
            ids = row[row >= 0][None]
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), prompt_item_ids=torch.full((1, SLOTS), -1),
                        output_hidden_states=True)
            assert torch.allclose(vectors[item], out.hidden_states[-1][0, -1], atol=1e-5), item
            # and the knowledge prompt is part of it
            without = model.lm.base_model(input_ids=ids).last_hidden_state[0, -1]
            assert not torch.allclose(vectors[item], without, atol=1e-3), item


def test_item_vectors_ignore_lora_and_follow_the_weights_they_come_from(processor):
    model = build(processor, "llama")
    batch = processor(HISTORIES[:2])
    with torch.no_grad():
        vectors = model.refresh_item_vectors().clone()
    assert not model.item_vectors_stale()
    plain_logits = _logits(model, batch)
    model.enable_lora(r=4)
    model.set_stage("lora")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    assert not torch.allclose(_logits(model, batch), plain_logits, atol=1e-3)  # the adapters are live ...
    assert not model.item_vectors_stale()  # ... but h_i come from the un-adapted LM
    with torch.no_grad():
        assert torch.allclose(model.refresh_item_vectors(), vectors, atol=1e-6)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.lm.named_parameters()), "encoding reset the stage"

    # a knowledge-prompt change makes the cache stale, and recommend recomputes it
    with torch.no_grad():
        model.knowledge_prompt.mlp.down.bias.add_(0.5)
    assert model.item_vectors_stale()
    model.recommend(**processor([[1, 2]]), top_k=2)
    assert not model.item_vectors_stale()
    refreshed = model.item_vectors.clone()
    assert not torch.allclose(refreshed, vectors, atol=1e-3)
    with torch.no_grad():
        assert torch.allclose(model.refresh_item_vectors(), refreshed)
    # an LM weight too (not a LoRA one)
    with torch.no_grad():
        model.lm.model.norm.weight.mul_(1.5)
    assert model.item_vectors_stale()
    model.refresh_item_vectors()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.mul_(2.0)
    assert not model.item_vectors_stale()


def test_a_cache_that_cannot_hold_the_prompts_is_refused(models, processor):
    from transformers import StaticCache

    model = models["llama"]
    batch = processor(HISTORIES[:1])
    static = StaticCache(config=model.config.text_config, max_cache_len=batch["input_ids"].shape[1] + 2)
    with pytest.raises(ValueError, match="DynamicCache, not a StaticCache"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              prompt_item_ids=batch["prompt_item_ids"], use_cache=True, **{CACHE_ARG: static})


def test_staleness_is_seen_after_a_fused_optimizer_step_and_before_saving(processor, tmp_path):
    # fused AdamW (the Trainer's default) writes in place without bumping version counters
    model = build(processor, "llama")
    model.refresh_item_vectors()
    optimizer = torch.optim.AdamW(model.knowledge_prompt.parameters(), lr=0.1, fused=True)
    for p in model.knowledge_prompt.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert model.item_vectors_stale()
    model.save_pretrained(tmp_path)  # saving refreshes: the saved vectors are those of the saved weights
    assert not model.item_vectors_stale()
    reloaded = LancerForSeqRec.from_pretrained(tmp_path)
    assert not reloaded.item_vectors_stale()
    assert torch.equal(reloaded.item_vectors, model.item_vectors)


# -- 4. the reasoning prompt (eq. 6-9) --------------------------------------------------------------

def test_reasoning_prompt_depends_on_the_history_and_only_on_real_slots(processor):
    # prompt weights at std 0.2 (as after training): at the 0.02 init the prefix is ~1e-5 and
    # the attention over the knowledge tokens is nearly uniform, so users barely differ yet
    model = build(processor, "llama", initializer_range=0.2)
    with torch.no_grad():
        model.refresh_item_vectors()
        slots = torch.tensor([[1, 2, 3, -1], [5, 6, 7, -1]])
        prefix, mask = model.prompt_prefix(2, slots)
    assert torch.equal(prefix[0, :THETA], prefix[1, :THETA])  # one knowledge prompt for everybody
    assert not torch.allclose(prefix[0, THETA:THETA + 3], prefix[1, THETA:THETA + 3], atol=1e-4)  # per user
    assert mask[:, THETA:].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0]]

    text = processor([[1, 2, 3], [1, 2, 3]])  # same text, different reasoning prompts
    logits = _logits(model, text, prompt_item_ids=slots)
    assert torch.allclose(logits[0], _logits(model, text, prompt_item_ids=slots[:1].repeat(2, 1))[1], atol=1e-5)
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)

    # a padded slot gathers item 0's vector and must be masked out: changing that vector changes
    # nothing for a padded history, but does for a history that holds item 0
    one = processor([[3, 5]])
    padded = torch.tensor([[3, 5, -1, -1]])
    holds_zero = torch.tensor([[3, 5, 0, -1]])
    before_padded = _logits(model, one, prompt_item_ids=padded)
    before_zero = _logits(model, one, prompt_item_ids=holds_zero)
    with torch.no_grad():
        model.item_vectors[0].add_(torch.randn_like(model.item_vectors[0]) * 5)
    assert not model.item_vectors_stale()  # the vectors, not the weights, changed: no recompute
    assert torch.allclose(_logits(model, one, prompt_item_ids=padded), before_padded, atol=1e-6)
    assert not torch.allclose(_logits(model, one, prompt_item_ids=holds_zero), before_zero, atol=1e-4)

    # no history item at all: exactly the knowledge prompt alone
    config = copy.deepcopy(model.config)
    config.use_reasoning_prompt = False
    knowledge_only = LancerForSeqRec(config).eval()
    missing, unexpected = knowledge_only.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("reasoning_prompt.") for k in unexpected)
    empty = torch.full((1, SLOTS), -1)
    assert torch.allclose(_logits(model, one, prompt_item_ids=empty), _logits(knowledge_only, one, prompt_item_ids=None), atol=1e-5)
    assert not torch.allclose(_logits(model, one, prompt_item_ids=padded), _logits(knowledge_only, one, prompt_item_ids=None), atol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_no_training_token_sees_the_vector_of_the_item_it_predicts(tokenizer, model_type, tmp_path):
    # loss_on="items" labels every window item while the reasoning prompt holds those same items:
    # a plain prefix shows them to the tokens that must predict them; "causal" opens slot j at the
    # end of item j's text.
    causal, plain = _processor(tokenizer, prompt_visibility="causal"), _processor(tokenizer)
    histories, targets = [[1, 2, 3], [6, 7, 8, 9, 10]], [5, 12]
    batch = causal(histories, targets=targets)
    tokens, sep = causal.item_tokens(), causal.separator_ids
    for row, history in enumerate(histories):
        window = history[-4:]
        visible = batch["prompt_slots_visible"][row].tolist()
        expected, end = [], len(visible)
        for pos, item in reversed(list(enumerate(window + [targets[row]]))):
            piece = len(tokens[item]) + len(sep)
            expected = [min(pos, len(window))] * (piece - 1) + [min(pos + 1, len(window))] + expected
            end -= piece
        assert visible[end:] == expected and set(visible[:end]) == {0}
    assert "prompt_slots_visible" not in causal(histories)  # generation reads every slot
    assert "prompt_slots_visible" not in plain(histories, targets=targets)  # the plain prefix keeps the 2D mask
    collated = LancerCollator(causal)([{"history": h, "target": t} for h, t in zip(histories, targets)])
    assert torch.equal(collated["prompt_slots_visible"], batch["prompt_slots_visible"])
    assert "prompt_slots_visible" not in LancerCollator(plain)([{"history": h, "target": t} for h, t in zip(histories, targets)])

    model = build(causal, model_type, initializer_range=0.2)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "prompt_item_ids")}
    with torch.no_grad():
        model.refresh_item_vectors()
        # every slot open: the 4D mask gives what the plain 2D mask gives (left padding included)
        everything = causal.pad({"input_ids": [r.tolist() for r in batch["input_ids"]],
                                 "prompt_slots_visible": [[4] * batch["input_ids"].shape[1]] * 2})["prompt_slots_visible"]
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(model(**inputs, prompt_slots_visible=everything).logits[real], model(**inputs).logits[real],
                                   atol=1e-5, rtol=1e-4)
        before = model(**inputs, prompt_slots_visible=batch["prompt_slots_visible"]).logits
        model.item_vectors[8].add_(torch.randn_like(model.item_vectors[8]) * 5)  # row 1's second window item
        after = model(**inputs, prompt_slots_visible=batch["prompt_slots_visible"]).logits
    opens = batch["prompt_slots_visible"][1].tolist().index(2)  # the last token of item 8's text
    changed = (before[1] - after[1]).abs().amax(dim=-1) > 1e-4
    assert not changed[:opens].any() and changed[opens:].all()
    assert torch.allclose(before[0], after[0], atol=1e-6)  # row 0 does not hold item 8

    # the Trainer runs stage 1 on causal rows: the reasoning prompt learns, the LM stays frozen
    model.set_stage("prompt")
    before = _params(model)
    _train_two_steps(model, [{"history": h, "target": t} for h, t in zip(histories, targets)], LancerCollator(causal), tmp_path)
    changed = _changed(model, before)
    assert PROMPT_CORE <= changed and not any(name.startswith("lm.") for name in changed), changed


# -- 5. cosine mapping (eq. 12) ---------------------------------------------------------------------

def test_cosine_mapping_finds_each_item_from_its_own_text(models, processor):
    model = models["llama"]
    mapper = model.item_mapper
    assert mapper.all_distinct
    tokens, sep = processor.item_tokens(), processor.separator_ids
    eos, pad = processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    rows = []
    for item in range(NUM_ITEMS):
        other = tokens[(item + 7) % NUM_ITEMS]
        rows.append(tokens[item] + sep + other + sep)  # the next item's text after the separator is ignored
        rows.append(tokens[item] + [eos] + other)  # eos ends the text too
    width = max(map(len, rows))
    batch = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    items, cosine = mapper.map(batch)
    assert items.tolist() == [i for i in range(NUM_ITEMS) for _ in range(2)]
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)
    # without the separator the second item's tokens count, and the first item is no longer an exact match
    merged = torch.tensor([tokens[0] + tokens[1]])
    assert float(mapper.map(merged)[1][0]) < 1 - 1e-4


# -- 6. the four strategies through recommend -------------------------------------------------------

def _recommend_and_generated(model, **kwargs):
    """recommend's output and the generate output it was computed from."""
    captured = {}
    generate = model.generate

    def spy(*args, **kw):
        captured["out"] = generate(*args, **kw)
        return captured["out"]

    model.generate = spy
    try:
        rec = model.recommend(**kwargs)
    finally:
        del model.generate
    return rec, captured["out"]


def _spelled_items(model, generated):
    """For every generated row: the item whose tokens + separator it spells up to its end token, or -1."""
    end, sep = model.item_end_token_id, model.config.separator_token_ids
    table = model.item_token_ids.tolist()
    texts = {tuple([t for t in row if t >= 0] + sep): i for i, row in reversed(list(enumerate(table)))}
    out = []
    for row in generated.tolist():
        cut = row[:row.index(end) + 1] if end in row else row
        out.append(texts.get(tuple(cut), -1))
    return out


STRATEGIES = ["beam_search", "beam_sample", "greedy", "sample"]


@pytest.mark.parametrize("decode", ["cosine", "trie"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_returns_ranked_distinct_items(models, processor, strategy, decode):
    model = models["llama"]
    torch.manual_seed(1)
    histories = [[1, 2, 3], [4, 5], list(range(6, 18))]  # the last: 12 items, 4 of them in the window
    top_k = 4
    batch = processor(histories)
    rec, out = _recommend_and_generated(model, **batch, top_k=top_k, strategy=strategy, decode=decode)
    beams = strategy.startswith("beam")
    per_row = model.config.beam_size if beams else 1
    generated = out.sequences[:, batch["input_ids"].shape[1]:]
    assert generated.shape[0] == len(histories) * per_row
    assert rec.item_ids.shape == rec.scores.shape == (len(histories), top_k)
    assert rec.num_generated.tolist() == [per_row] * len(histories)
    if decode == "trie":
        mapped = model.trie.items_of(generated)
        assert mapped.tolist() == _spelled_items(model, generated), "a trie beam is not an item's text + separator"
        assert bool((mapped >= 0).all())
    else:
        mapped = model.item_mapper.map(generated)[0]
    mapped = mapped.view(len(histories), per_row).tolist()
    for row, ids, scores, valid, distinct in zip(mapped, rec.item_ids.tolist(), rec.scores.tolist(),
                                                 rec.num_valid.tolist(), rec.num_distinct.tolist()):
        real = [i for i in ids if i >= 0]
        assert len(real) == len(set(real)) and all(0 <= i < NUM_ITEMS for i in real)
        assert ids[:len(real)] == real  # -1 only at the end
        assert valid == sum(i >= 0 for i in row) and distinct == len({i for i in row if i >= 0}) <= valid
        assert all((s == float("-inf")) == (i < 0) for i, s in zip(ids, scores))
        assert scores[:len(real)] == sorted(scores[:len(real)], reverse=True)
        if beams or decode == "trie":  # one item per sequence, best first, duplicates dropped
            assert real == list(dict.fromkeys(i for i in row if i >= 0))[:top_k]
        else:  # greedy / sample + cosine: one text ranks the catalog, its own item first
            assert len(real) == (top_k if valid else 0)
            assert not valid or real[0] == row[0]
        if decode == "trie":
            assert valid == per_row

    if strategy in ("greedy", "beam_search"):  # deterministic: a row batched with others = the row alone
        for row, history in enumerate(histories):
            alone = model.recommend(**processor([history]), top_k=top_k, strategy=strategy, decode=decode)
            assert alone.item_ids[0].tolist() == rec.item_ids[row].tolist()
            assert torch.allclose(alone.scores[0], rec.scores[row], atol=1e-4)

    # exclude_history never returns a seen item (the whole history, not only the window)
    excluded = model.recommend(**batch, top_k=top_k, strategy=strategy, decode=decode, exclude_history=True)
    for history, ids in zip(histories, excluded.item_ids.tolist()):
        assert not set(history) & set(ids)


class Steer(LogitsProcessor):
    """Pushes row r towards the tokens of targets[r] (+ separator)."""

    def __init__(self, processor, targets, start):
        self.pieces = [processor.item_tokens()[t] + processor.separator_ids for t in targets]
        self.start = start

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.start
        for row, piece in enumerate(self.pieces):
            if step < len(piece):
                scores[row, piece[step]] += 50.0
        return scores


def test_one_text_scores_end_at_the_item_end(models, processor):
    """Greedy + trie: an item shorter than its batch neighbour's is scored up to its own end
    (its padding once made the score -inf)."""
    model = models["llama"]
    lengths = [len(t) for t in processor.item_tokens()]
    long, short = lengths.index(max(lengths)), lengths.index(min(lengths))
    assert lengths[long] > lengths[short]
    batch = processor([[1, 2], [5]])
    steer = Steer(processor, [long, short], batch["input_ids"].shape[1])
    rec = model.recommend(**batch, top_k=2, strategy="greedy", decode="trie", logits_processor=[steer])
    assert rec.item_ids[:, 0].tolist() == [long, short]
    assert bool(torch.isfinite(rec.scores[:, 0]).all()) and rec.num_valid.tolist() == [1, 1]
    for row, (history, target) in enumerate(zip([[1, 2], [5]], [long, short])):
        alone = processor([history])
        one = model.recommend(**alone, top_k=2, strategy="greedy", decode="trie",
                              logits_processor=[Steer(processor, [target], alone["input_ids"].shape[1])])
        assert one.item_ids[0, 0] == target and torch.allclose(one.scores[0, 0], rec.scores[row, 0], atol=1e-4)


def test_exclude_history_has_something_to_exclude(models, processor):
    """The long history covers most of the catalog: without exclusion its items do come back."""
    model = models["llama"]
    batch = processor([list(range(6, 18))])
    for decode in ("cosine", "trie"):
        ids = model.recommend(**batch, top_k=6, decode=decode, strategy="greedy" if decode == "cosine" else "beam_search").item_ids
        assert set(ids[0].tolist()) & set(range(6, 18)), decode


def test_gpt2_recommends_with_both_decodings(models, processor):
    model = models["gpt2"]
    batch = processor(HISTORIES)
    for decode in ("cosine", "trie"):
        rec, out = _recommend_and_generated(model, **batch, top_k=3, decode=decode)
        assert rec.item_ids.shape == (3, 3)
        if decode == "trie":
            generated = out.sequences[:, batch["input_ids"].shape[1]:]
            assert -1 not in _spelled_items(model, generated) and bool((rec.item_ids >= 0).all())


# -- 7. saving and loading --------------------------------------------------------------------------

def test_round_trip_and_remote_code(processor, tmp_path, run_without_genrec_hf):
    model = build(processor, "llama")
    batch = processor(HISTORIES)
    expected = model.recommend(**batch, top_k=5)  # computes the item vectors, saved with the weights
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_lancer.LancerForSeqRec"
    for name in ("modeling_lancer.py", "configuration_lancer.py", "trie.py", "cosine.py", "processing_lancer.py"):
        assert (ckpt / name).is_file() and not (ckpt / name).is_symlink(), name

    loaded = AutoModel.from_pretrained(ckpt).eval()
    assert isinstance(loaded, LancerForSeqRec)
    assert torch.equal(loaded.item_vectors, model.item_vectors)
    assert not loaded.item_vectors_stale()
    calls = []
    refresh = loaded.refresh_item_vectors
    loaded.refresh_item_vectors = lambda *a, **k: calls.append(1) or refresh(*a, **k)
    got = loaded.recommend(**SeqRecProcessor.from_pretrained(ckpt)(HISTORIES), top_k=5)
    assert not calls, "the saved item vectors were recomputed"
    assert torch.equal(got.item_ids, expected.item_ids) and torch.equal(got.scores, expected.scores)
    pipeline = SeqRecPipeline.from_pretrained(ckpt)
    assert isinstance(pipeline.model, LancerForSeqRec) and not pipeline.full_ranking
    assert torch.equal(pipeline.rank_items(HISTORIES, top_k=5).item_ids, expected.item_ids)
    for history, ids in zip(HISTORIES, pipeline.recommend(HISTORIES, top_k=5).item_ids.tolist()):
        assert not set(history) & set(ids)  # people are not shown what they have seen

    torch.save({"ids": expected.item_ids, "scores": expected.scores}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["genrec_hf"] = None
        import torch
        from transformers import AutoModel, AutoProcessor
        ckpt = {str(ckpt)!r}
        model = AutoModel.from_pretrained(ckpt, trust_remote_code=True).eval()
        assert "genrec_hf" not in type(model).__module__ and type(model).__name__ == "LancerForSeqRec"
        processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
        assert "genrec_hf" not in type(processor).__module__
        assert not model.item_vectors_stale()
        out = model.recommend(**processor({HISTORIES!r}), top_k=5)
        e = torch.load({str(tmp_path / 'expected.pt')!r})
        assert torch.equal(out.item_ids, e["ids"]), (out.item_ids, e["ids"])
        assert torch.equal(out.scores, e["scores"]), (out.scores, e["scores"])
        print("remote code ok")
    """)
    run_without_genrec_hf(script, "remote code ok")


def test_a_lora_model_reloads_with_its_adapters(processor, tmp_path):
    model = build(processor, "gpt2")
    model.enable_lora(r=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    batch = processor(HISTORIES)
    logits = _logits(model, batch)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.lora == model.config.lora
    lora = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert lora and all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in lora.items())
    assert torch.allclose(_logits(loaded, batch), logits, atol=1e-6)
    assert torch.equal(loaded.recommend(**batch, top_k=3).item_ids, model.recommend(**batch, top_k=3).item_ids)


# -- 8. bad input -----------------------------------------------------------------------------------

def test_bad_inputs_are_refused_with_a_clear_message(models, processor, tokenizer):
    model = models["llama"]
    with pytest.raises(ValueError, match="empty history in row 0"):
        processor([[]])
    with pytest.raises(ValueError, match="unknown item id 99"):
        processor([[1, 99]])
    with pytest.raises(ValueError, match="unknown item id 99"):
        processor.knowledge_inputs([99])
    batch = processor([[1, 2]])
    with pytest.raises(ValueError, match=f"unknown item id {NUM_ITEMS} in prompt_item_ids"):
        model(**{**_text_inputs(batch), "prompt_item_ids": torch.tensor([[1, NUM_ITEMS]])})
    with pytest.raises(ValueError, match="needs prompt_item_ids"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="more than history_slots"):
        model(**{**_text_inputs(batch), "prompt_item_ids": torch.arange(SLOTS + 1)[None]})

    other = _processor(tokenizer, _catalog(["Extra one"]))
    with pytest.raises(ValueError, match="catalog size mismatch"):
        SeqRecPipeline(model, other)
    with pytest.raises(ValueError, match="catalog size mismatch"):
        other.check_model_config(model.config.to_dict())
    with pytest.raises(ValueError, match="catalog size mismatch"):
        model.set_catalog(other.item_token_table(), other.item_detail_table())
    with pytest.raises(ValueError, match="catalog size mismatch"):
        model.set_catalog(processor.item_token_table(), processor.item_detail_table()[:-1])

    with pytest.raises(ValueError, match="strategy must be one of"):
        model.recommend(**batch, strategy="nope")
    with pytest.raises(ValueError, match="decode must be 'cosine' or 'trie'"):
        model.recommend(**batch, decode="nope")
    with pytest.raises(ValueError, match="exclude_history=True needs history_item_ids"):
        model.recommend(**_text_inputs(batch), exclude_history=True)
    with pytest.raises(ValueError, match="reasoning prompt attends to the knowledge prompt"):
        LancerConfig(use_reasoning_prompt=True, use_knowledge_prompt=False)
    with pytest.raises(ValueError, match="decode must be one of"):
        LancerConfig(decode="nope")
    with pytest.raises(ValueError, match="text_config is required"):
        LancerForSeqRec(LancerConfig(num_items=3))
    empty = LancerForSeqRec(model.config)
    with pytest.raises(ValueError, match="call set_catalog"):
        empty.recommend(**batch)
    twice = copy.deepcopy(model)
    twice.enable_lora(r=2)
    with pytest.raises(ValueError, match="LoRA adapters are already in this model"):
        twice.enable_lora(r=2)


# -- 9. the processor and its variants --------------------------------------------------------------

def test_labels_cover_the_items_only(processor):
    tokens, sep = processor.item_tokens(), processor.separator_ids
    histories, targets = [[1, 2, 3], [4], [6, 7, 8, 9, 10, 11]], [5, 12, 13]
    batch = processor(histories, targets=targets)
    instruction = processor.format.instruction_ids
    assert instruction and batch["labels"].shape == batch["input_ids"].shape
    for row, (history, target) in enumerate(zip(histories, targets)):
        ids, labels, mask = batch["input_ids"][row].tolist(), batch["labels"][row].tolist(), batch["attention_mask"][row].tolist()
        window = history[-4:]
        items = [t for i in window + [target] for t in tokens[i] + sep]
        start = len(ids) - len(items)
        # left padding, then bos + instruction, then the items with their separators
        pad = mask.index(1)
        assert ids[pad:start] == [processor.tokenizer.bos_token_id] + instruction
        assert ids[start:] == items
        assert labels[:start] == [-100] * start and labels[start:] == items
        assert batch["prompt_item_ids"][row].tolist()[:len(window)] == window
        assert batch["history_item_ids"][row].tolist()[:len(history)] == history

    only_target = _processor(processor.tokenizer, loss_on="target")(histories, targets=targets)
    for row, target in enumerate(targets):
        labels = only_target["labels"][row].tolist()
        piece = tokens[target] + sep
        assert labels[-len(piece):] == piece and set(labels[:-len(piece)]) == {-100}
    assert "labels" not in processor(histories)  # recommendation inputs

    knowledge = processor.knowledge_inputs([0, 5])
    detail = processor.format.detail_tokens()
    for row, item in enumerate([0, 5]):
        labels = [t for t in knowledge["labels"][row].tolist() if t != -100]
        assert labels == detail[item]  # the detail text, not bos or padding


def test_variants_use_the_paper_texts(processor, tokenizer):
    attrs = _attributes()
    full = processor.format
    assert processor.settings["variant"] == "full"
    assert full.item_texts()[3] == attrs[3]["title"]
    assert full.detail_texts()[3] == f"{attrs[3]['title']} ({attrs[3]['year']}); genres: {', '.join(attrs[3]['genres'])}"

    title = _processor(tokenizer, variant="title").format
    assert title.item_texts() == title.detail_texts() == [a["title"] for a in attrs]

    id_variant = _processor(tokenizer, variant="id")
    numbers = id_variant.settings["item_numbers"]
    assert sorted(numbers) == list(range(NUM_ITEMS)) and numbers != list(range(NUM_ITEMS))
    assert id_variant.format.item_texts() == id_variant.format.detail_texts() == [f"item_{n}" for n in numbers]
    assert _processor(tokenizer, variant="id").settings["item_numbers"] == numbers  # seeded
    assert _processor(tokenizer, variant="id", seed=7).settings["item_numbers"] != numbers

    bare = _processor(tokenizer, variant="bare")
    assert bare.format.instruction_ids == [] and bare.format.item_texts() == title.item_texts()
    row = bare.encode([1, 2])["input_ids"]
    sep = bare.separator_ids
    assert row == [tokenizer.bos_token_id] + bare.item_tokens()[1] + sep + bare.item_tokens()[2] + sep
    with pytest.raises(ValueError, match="unknown LANCER variant"):
        _processor(tokenizer, variant="nope")


def test_bare_variant_runs_end_to_end(tokenizer):
    bare = _processor(tokenizer, variant="bare")
    model = build(bare, "gpt2", use_knowledge_prompt=False, use_reasoning_prompt=False)
    assert model.config.num_prefix_tokens == 0
    assert all(name.startswith("lm.") for name, _ in model.named_parameters())  # the LM alone
    model.train()
    loss = model(**bare(HISTORIES, targets=[4, 6, 12])).loss
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    batch = bare(HISTORIES)
    for decode in ("cosine", "trie"):
        rec = model.recommend(**batch, top_k=3, decode=decode)
        assert rec.item_ids.shape == (3, 3)
    assert bool((rec.item_ids >= 0).all())
    # no prefix: the LM's own logits
    assert torch.allclose(_logits(model, batch), model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                                         position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits.detach(),
                          atol=1e-5)


# -- 10. items with the same title ------------------------------------------------------------------

def test_items_with_the_same_title_share_a_trie_leaf(tokenizer):
    attrs = _attributes()
    catalog = _catalog([attrs[2]["title"], attrs[2]["title"]])  # items 20 and 21: the title of item 2
    dup = _processor(tokenizer, catalog)
    sep = torch.tensor(dup.separator_ids)
    table = dup.item_token_table()
    rows = [torch.cat([r[r >= 0], sep]) for r in table]
    width = max(len(r) for r in rows)
    with_sep = torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=-1) for r in rows])
    with pytest.raises(ValueError, match=r"items \[2, 20\] have the same token sequence"):
        TokenTrie(with_sep, len(tokenizer))
    trie = TokenTrie(with_sep, len(tokenizer), duplicates="first")
    assert trie.items_of(with_sep[[2, 20, 21, 3]]).tolist() == [2, 2, 2, 3]

    model = build(dup, "llama")
    assert model.trie.items_of(with_sep[[20, 21]]).tolist() == [2, 2]
    assert model.item_mapper.map(with_sep[[2, 20, 21]])[0].tolist() == [2, 2, 2]
    rec = model.recommend(**dup([[1], [2, 3]]), top_k=NUM_ITEMS + 2, decode="trie", num_beams=NUM_ITEMS + 2)
    for ids in rec.item_ids.tolist():
        real = [i for i in ids if i >= 0]
        assert len(real) == len(set(real)) and not {20, 21} & set(real)


@pytest.mark.parametrize("loss_on", ["items", "target"])
def test_training_scores_only_the_labelled_tail_with_the_same_loss_and_gradients(tokenizer, loss_on):
    processor = _processor(tokenizer, loss_on=loss_on)
    model = build(processor, initializer_range=0.2)
    batch = processor([[0, 3, 5], [7, 1]], targets=[2, 9])
    losses, grads = [], []
    for training in (False, True):
        model.train(training)
        model.zero_grad()
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "prompt_item_ids", "labels")})
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if training:  # the tail only: the instruction (and, for "target", the history) gets no logits
            assert out.logits.shape[1] < batch["input_ids"].shape[1]
        else:
            assert out.logits.shape[1] == batch["input_ids"].shape[1]
    torch.testing.assert_close(losses[0], losses[1])
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_a_dtype_cast_keeps_the_fingerprint_float64_and_recomputes_item_vectors_once(processor):
    # model.to(torch.bfloat16) used to round the float64 fingerprint too: the next recommend then failed
    # comparing float64 with bf16 ("Double did not match BFloat16")
    model = build(processor, "llama")
    model.eval()
    model.recommend(**processor([[1, 2]]), top_k=2)
    assert not model.item_vectors_stale()
    model.trie, model.item_mapper  # cached on the model's device and dtype
    model.to(torch.bfloat16)
    # a second _apply override once shadowed the one that drops them: a later .cuda() kept a CPU trie
    assert model._trie is None and model._mapper is None
    assert model.item_vectors_fingerprint.dtype == torch.float64
    assert model.item_vectors.dtype == torch.bfloat16
    assert model.item_vectors_stale()  # the rounded weights are other weights: h_i are recomputed in bf16
    first = model.recommend(**processor([[1, 2]]), top_k=2)
    assert not model.item_vectors_stale()
    vectors = model.item_vectors.clone()
    second = model.recommend(**processor([[1, 2]]), top_k=2)
    assert torch.equal(model.item_vectors, vectors)  # no recompute on the second call
    assert torch.equal(first.item_ids, second.item_ids)
