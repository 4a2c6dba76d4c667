"""RecSysGLMForInfilling (models/recsys_glm, the model half): the Part A / Part B attention pattern,
the loss, left-padding invariance, the KV cache, 2D positions at generation time (the dynamic rule,
reordered beams), trie decoding, LoRA, the THUDM converter, saving (remote code included), init,
`Trainer`, bad inputs.

Tiny GLM and tiny Llama backbones; rows hand-built by the tensor contract (no processor): `encode`
is the test's own reading of the contract's training-time rule.
"""

import functools
import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, Trainer, TrainingArguments

from genrec_hf.generation.trie import TokenTrie
from genrec_hf.models.recsys_glm.configuration_recsys_glm import GLMTextConfig, RecSysGLMConfig
from genrec_hf.models.recsys_glm.modeling_recsys_glm import (
    BACKBONES, CACHE_ARG, RecSysGLMForInfilling, convert_thudm_glm_state_dict, infilling_intra_positions,
    infilling_visibility,
)

PAD, MASK, SMASK, GMASK, START, END = range(6)
TOKENS = dict(pad_token_id=PAD, mask_token_id=MASK, smask_token_id=SMASK, gmask_token_id=GMASK,
              start_token_id=START, end_token_id=END)
V = 48
# the catalog: item 1 is a prefix of item 0, items 2 and 4 share their tokens (as two ml-100k movies share a title)
ITEMS = [[10, 11, 12], [10, 11], [13], [14, 15], [13], [16, 17, 18], [16, 19], [20, 21, 22, 23]]
KINDS = ["glm", "llama"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_config(kind, **overrides):
    if kind == "glm":
        return GLMTextConfig(**{"vocab_size": V, "hidden_size": 32, "num_layers": 2, "num_attention_heads": 4,
                                "max_sequence_length": 64, **overrides})
    return LlamaConfig(**{"vocab_size": V, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
                          "tie_word_embeddings": True, **overrides})


def build(kind="glm", seed=0, catalog=True, text=None, as_initialised=False, **config):
    torch.manual_seed(seed)
    cfg = RecSysGLMConfig(text_config=text or text_config(kind), num_items=len(ITEMS), max_item_tokens=4, beam_size=6,
                          **{**TOKENS, **config})
    model = RecSysGLMForInfilling(cfg).eval()
    if kind == "llama" and not as_initialised:  # zero at init: give the intra table values so that it matters here
        with torch.no_grad():
            model.intra_position_embeddings.weight.normal_(0, 0.5)
    if catalog:
        model.set_catalog(torch.tensor([row + [-1] * (4 - len(row)) for row in ITEMS]))
    return model


def encode(part_a, spans):
    """One row by the contract. part_a: segments, each an int (a lone token), a tuple (an entity) or
    "M" (a [MASK]; its span is the next of `spans`). spans: one list of segments per "M" (an empty
    list = the inference row's lone [START]). Returns (Part A, Part B) as dicts of lists."""
    a = {"ids": [], "intra": []}
    masks = []
    for seg in part_a:
        if seg == "M":
            masks.append(len(a["ids"]))
            a["ids"].append(MASK), a["intra"].append(0)
        elif isinstance(seg, tuple):
            a["ids"] += seg
            a["intra"] += range(1, len(seg) + 1)
        else:
            a["ids"].append(seg), a["intra"].append(0)
    a["inter"] = list(range(len(a["ids"])))
    b = {"ids": [], "inter": [], "intra": [], "labels": []}
    for mask_at, span in zip(masks, spans):
        ids, intra = [START], [1]
        for seg in span:
            for j, tok in enumerate(seg if isinstance(seg, tuple) else (seg,)):
                ids.append(tok)
                # after [START]: 2; inside an entity: +1; a new entity or a lone token: 1
                intra.append(2 if len(ids) == 2 else intra[-1] + 1 if j > 0 else 1)
        b["ids"] += ids
        b["inter"] += [a["inter"][mask_at]] * len(ids)
        b["intra"] += intra
        b["labels"] += ids[1:] + [END]
    return a, b


def collate(rows, extra_pad_a=0, extra_pad_b=0):
    """Rows (encode's output) -> the contract's batch: Part A left-padded, Part B right-padded."""
    width_a = max(len(a["ids"]) for a, _ in rows) + extra_pad_a
    width_b = max(len(b["ids"]) for _, b in rows) + extra_pad_b
    out = {k: [] for k in ("input_ids", "attention_mask", "position_ids", "labels")}
    for a, b in rows:
        pa, pb = width_a - len(a["ids"]), width_b - len(b["ids"])
        out["input_ids"].append([PAD] * pa + a["ids"] + b["ids"] + [PAD] * pb)
        out["attention_mask"].append([0] * pa + [1] * (len(a["ids"]) + len(b["ids"])) + [0] * pb)
        out["position_ids"].append([[0] * pa + a["inter"] + b["inter"] + [0] * pb,
                                    [0] * pa + a["intra"] + b["intra"] + [0] * pb])
        out["labels"].append([-100] * (width_a) + b["labels"] + [-100] * pb)
    batch = {k: torch.tensor(v) for k, v in out.items()}
    batch["part_a_length"] = torch.full((len(rows),), width_a)
    return batch


ROWS = [
    encode([30, (10, 11, 12), 31, "M", 32], [[(14, 15), 33]]),
    encode([34, "M", (16, 19), 35, "M"], [[36], [(13,), 37, (20, 21)]]),
]


def inference_batch():
    """Inference rows: history items in Part A, [MASK] where the next item goes, [START] in Part B."""
    rows = [encode([30, (10, 11, 12), 31, (14, 15), 31, "M"], [[]]), encode([(16, 19), 31, "M"], [[]])]
    batch = collate(rows)
    del batch["labels"]
    return batch


def logits(model, batch, **kwargs):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}, **kwargs).logits


# -- 1. attention pattern ---------------------------------------------------------------------------

def test_visibility_mask_on_a_hand_built_row():
    # col 0 left padding, cols 1-2 Part A, cols 3-4 Part B, col 5 right padding
    mask = torch.tensor([[0, 1, 1, 1, 1, 0]])
    expected = torch.tensor([
        [1, 1, 1, 0, 0, 0],  # a padding query sees Part A (and itself): its output is unused
        [0, 1, 1, 0, 0, 0],  # Part A: both Part A tokens, no Part B, no padding
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],  # Part B: Part A and itself
        [0, 1, 1, 1, 1, 0],  # Part B: Part A and every earlier Part B token
        [0, 1, 1, 1, 1, 1],
    ], dtype=torch.bool)
    got = infilling_visibility(mask, torch.tensor([3]), 6)
    assert got.shape == (1, 1, 6, 6) and torch.equal(got[0, 0], expected)
    # cached generation: the last two queries against all six keys
    assert torch.equal(infilling_visibility(mask, torch.tensor([3]), 2)[0, 0], expected[4:])


@pytest.mark.parametrize("kind", KINDS)
def test_attention_pattern_through_outputs(kind):
    """Which outputs a changed token reaches: Part A bidirectional, Part B causal, padding nowhere."""
    model = build(kind)
    batch = collate(ROWS, extra_pad_a=1, extra_pad_b=1)
    base = logits(model, batch)
    a, width = int(batch["part_a_length"][0]), batch["input_ids"].shape[1]
    real = batch["attention_mask"][0].bool()

    def changed(col, token=40):
        ids = batch["input_ids"].clone()
        ids[0, col] = token
        return (logits(model, {**batch, "input_ids": ids})[0] - base[0]).abs().amax(-1) > 1e-6

    last_a = a - 1  # a Part A token reaches every real token, the earlier Part A ones included
    assert bool(changed(last_a)[real].all())
    first_b = a + 1  # a Part B token (after [START]) reaches itself and later Part B tokens only
    hit = changed(first_b)
    assert not bool(hit[:first_b].any()) and bool(hit[first_b:][real[first_b:]].all())
    for pad in (0, width - 1):  # left (Part A) and right (Part B) padding reach nothing real
        assert not bool(changed(pad, PAD + 41)[real].any())
    if kind == "llama":  # the additive 4D mask means the same to eager attention as to SDPA
        model.config._attn_implementation = "eager"
        assert model.model.config._attn_implementation == "eager"
        assert torch.allclose(logits(model, batch)[batch["attention_mask"].bool()], base[batch["attention_mask"].bool()], atol=1e-5)
    if kind == "glm":  # the probabilities themselves: zero wherever the contract says invisible
        with torch.no_grad():
            out = model(**{k: v for k, v in batch.items() if k != "labels"}, output_attentions=True)
        visible = infilling_visibility(batch["attention_mask"], batch["part_a_length"], width)
        for probs in out.attentions:
            assert float(probs.masked_select(~visible.expand_as(probs)).abs().max()) == 0.0


# -- 2. loss, padding, cache ------------------------------------------------------------------------

def test_loss_covers_labelled_positions_only():
    model = build("glm")
    batch = collate(ROWS)
    out = model(**batch)
    labelled = batch["labels"] != -100
    assert not bool(labelled[:, : int(batch["part_a_length"][0])].any())  # the contract: Part A unlabelled
    manual = F.cross_entropy(out.logits[labelled], batch["labels"][labelled])
    assert torch.allclose(out.loss, manual, atol=1e-6)
    # Trainer's gradient accumulation: the sum over the given item count
    half = model(**batch, num_items_in_batch=2 * int(labelled.sum())).loss
    assert torch.allclose(half, manual / 2, atol=1e-6)
    nothing = model(**{**batch, "labels": torch.full_like(batch["labels"], -100)}).loss
    assert float(nothing.detach()) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_of_part_a_changes_nothing(kind):
    model = build(kind)
    alone = collate(ROWS[:1])
    padded = collate([ROWS[0], ROWS[1]], extra_pad_a=2)  # row 0 gets left and right padding
    got, want = logits(model, padded)[0], logits(model, alone)[0]
    real = padded["attention_mask"][0].bool()
    assert int(real.sum()) == want.shape[0]
    assert torch.allclose(got[real], want, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_decoding_equals_the_full_forward(kind):
    model = build(kind)
    batch = collate(ROWS, extra_pad_a=1)
    full = logits(model, batch)
    a = int(batch["part_a_length"][0])
    steps = [a + 1, a + 2, a + 3]  # prompt = Part A + [START]; then one Part B token at a time
    cut = steps[0]
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"][:, :cut], attention_mask=batch["attention_mask"][:, :cut],
                    position_ids=batch["position_ids"][..., :cut], part_a_length=batch["part_a_length"], use_cache=True)
        assert torch.allclose(out.logits, full[:, :cut], atol=1e-5)
        cache = out[CACHE_ARG]
        for col in steps:
            out = model(input_ids=batch["input_ids"][:, col:col + 1], attention_mask=batch["attention_mask"][:, :col + 1],
                        position_ids=batch["position_ids"][..., col:col + 1], part_a_length=batch["part_a_length"],
                        use_cache=True, **{CACHE_ARG: cache})
            assert cache.get_seq_length() == col + 1  # Part A's keys/values computed once, reused
            assert torch.allclose(out.logits[:, 0], full[:, col], atol=1e-5)
    # generation: beam search with the cache ranks as it does without one
    with_cache = model.recommend(**inference_batch(), top_k=5)
    without = model.recommend(**inference_batch(), top_k=5, use_cache=False)
    assert torch.equal(with_cache.item_ids, without.item_ids) and torch.allclose(with_cache.scores, without.scores, atol=1e-5)


# -- 3. positions at generation time -----------------------------------------------------------------

def _item_trie():
    return TokenTrie(torch.tensor([row + [END] + [-1] * (4 - len(row)) for row in ITEMS]), V, duplicates="first")


def test_intra_positions_follow_the_paper_figure_1():
    x1, x2, x3, x4, x5, x6, x7 = 40, 41, 42, 43, 44, 45, 46  # e1 = x1 x2 x3, e2 = x6 x7
    pool = TokenTrie(torch.tensor([[x1, x2, x3, END], [x6, x7, END, -1]]), V)
    cases = [
        ([(x1, x2, x3)], [1, 2, 3, 4]),   # [S] x1 x2 x3 -> 1 2 3 4
        ([x5], [1, 2]),                   # [S] x5 -> 1 2
        ([x4, (x6, x7)], [1, 2, 1, 2]),   # [S] x4 x6 x7 -> 1 2 1 2
        ([(x1, x2, x3), x5], [1, 2, 3, 4, 1]),
    ]
    for span, expected in cases:
        _, b = encode(["M"], [span])
        assert b["intra"] == expected  # the test's contract reading
        ids = torch.tensor([[MASK] + b["ids"]])
        got = infilling_intra_positions(ids, None, torch.tensor([1]), START, pool)
        assert got[0].tolist() == [0] + expected
    # two spans in one Part B (chronological): [S] x1 x2 x3 [S] x5
    ids = torch.tensor([[MASK, x4, MASK, START, x1, x2, x3, START, x5, PAD]])
    mask = (ids != PAD).long()
    got = infilling_intra_positions(ids, mask, torch.tensor([3]), START, pool)
    assert got[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 1, 2, 0]
    # the ablation: 1..n over each span, whatever the entities
    assert infilling_intra_positions(ids, mask, torch.tensor([3]), START)[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 1, 2, 0]
    ids2 = torch.tensor([[MASK, START, x4, x6, x7]])
    assert infilling_intra_positions(ids2, None, torch.tensor([1]), START)[0].tolist() == [0, 1, 2, 3, 4]
    # rows in any order (beams reordered): each row's positions come from its own tokens
    rows = torch.tensor([[MASK, START, x1, x2, x3], [MASK, START, x4, x6, x7], [MASK, START, x5, x6, x7]])
    want = infilling_intra_positions(rows, None, torch.tensor([1, 1, 1]), START, pool)
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(infilling_intra_positions(rows[perm], None, torch.tensor([1, 1, 1]), START, pool), want[perm])


def _reference_intra(tokens, start, pool_prefixes):
    """The contract's rule, one Python row at a time (entity pool = a set of token-tuple prefixes)."""
    out, path, pos, fresh = [], (), 0, False
    for tok in tokens:
        if tok == start:
            pos, path, fresh = 1, (), True
        elif fresh or path + (tok,) in pool_prefixes:  # right after [START], or the entity goes on
            pos, path, fresh = pos + 1, path + (tok,), False
        else:  # a new entity (or a lone token) starts
            pos, path = 1, (tok,)
        out.append(pos)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_generation_positions_match_training_positions_under_reordered_beams(kind):
    model = build(kind)
    batch = inference_batch()
    prefixes = {tuple(row + [END])[:i] for row in ITEMS for i in range(1, len(row) + 2)}
    # a catalog item generated after [START] gets the training-time positions of the same text
    for row in ITEMS:
        _, b = encode(["M"], [[tuple(row)]])
        assert _reference_intra(b["ids"], START, prefixes) == b["intra"] == list(range(1, len(row) + 2))

    steps = []
    prepare = model.prepare_inputs_for_generation

    @functools.wraps(prepare)  # generate checks its kwargs against this signature
    def spy(input_ids, **kwargs):
        inputs = prepare(input_ids, **kwargs)
        steps.append((input_ids.clone(), inputs["position_ids"].clone(), kwargs["prompt_position_ids"].clone()))
        return inputs

    model.prepare_inputs_for_generation = spy
    a = int(batch["part_a_length"][0])

    def check_steps():
        """Every fed position against the contract's rule on that step's (reordered) rows."""
        reordered, dynamic = False, False
        for i, (ids, fed, prompt) in enumerate(steps):
            assert fed.shape[-1] == (ids.shape[1] if i == 0 else 1)  # prefill, then one new token per step
            if i == 0:
                assert torch.equal(fed, prompt)
                continue
            assert torch.equal(fed[:, 0, 0], prompt[:, 0, -1])  # inter = the [START]'s = its [MASK]'s
            for row in range(ids.shape[0]):
                want = _reference_intra(ids[row, a:].tolist(), START, prefixes)[-1]
                assert int(fed[row, 1, 0]) == want, (i, row, ids[row].tolist())
                dynamic |= want != ids.shape[1] - a  # differs from plain 1..n counting
            reordered |= not torch.equal(ids[:, :-1], steps[i - 1][0])
        assert len(steps) >= 3
        assert reordered, "beam search never reordered the beams: the test would not see stale state"
        steps.clear()
        return dynamic

    rec = model.recommend(**batch, top_k=4, num_beams=6)  # on the trie: every beam follows an entity
    check_steps()
    assert bool((rec.item_ids[:, 0] >= 0).all())
    # off the trie, beams leave and re-enter entities: the positions restart, so the rule shows
    model.generate(**batch, num_beams=6, max_new_tokens=6, constrained=False)
    assert check_steps(), "no generated token left an entity: the dynamic rule was not exercised"


def test_dynamic_positions_off_gives_one_to_n():
    model = build("glm", dynamic_positions=False, catalog=False)  # no entity pool needed
    batch = inference_batch()
    generated = torch.tensor([[14, 15, 30, 31]] * 2)  # an entity, then two lone tokens
    ids = torch.cat([batch["input_ids"], generated], dim=1)
    mask = torch.ones_like(ids)
    positions = model.generation_position_ids(ids, mask, batch["position_ids"], batch["part_a_length"])
    width = batch["input_ids"].shape[1]
    assert positions[:, 1, width - 1:].tolist() == [[1, 2, 3, 4, 5]] * 2
    assert torch.equal(positions[:, 0, width:], batch["position_ids"][:, 0, -1:].expand(2, 4))
    on = build("glm")
    assert on.generation_position_ids(ids, mask, batch["position_ids"], batch["part_a_length"])[:, 1, width - 1:].tolist() == [[1, 2, 3, 1, 1]] * 2


# -- 4. recommendation ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_trie_decoding_yields_only_catalog_items(kind):
    model = build(kind)
    batch = inference_batch()
    rec = model.recommend(**batch, top_k=10, num_beams=10)
    assert rec.item_ids.shape == (2, 10) and rec.scores.shape == (2, 10)
    for ids, scores in zip(rec.item_ids.tolist(), rec.scores.tolist()):
        valid = [i for i in ids if i >= 0]
        assert valid and len(set(valid)) == len(valid) and set(valid) <= set(range(len(ITEMS)))
        assert 4 not in valid  # shares item 2's tokens: the first of them names the leaf
        assert ids[len(valid):] == [-1] * (10 - len(valid))  # 7 distinct items < top_k: padded
        assert scores[: len(valid)] == sorted(scores[: len(valid)], reverse=True)
    assert torch.equal(rec.num_valid, rec.num_generated)  # every beam is an item under the trie
    history = torch.tensor([[0, 3, -1], [5, 6, 7]])
    excluded = model.recommend(**batch, history_item_ids=history, exclude_history=True, top_k=3)
    for ids, hist in zip(excluded.item_ids.tolist(), history.tolist()):
        assert not set(ids) & {h for h in hist if h >= 0}
    free = model.recommend(**batch, top_k=3, constrained=False)  # off the trie: beams may be invalid
    assert bool((free.num_valid <= free.num_generated).all())


def test_generate_refuses_a_part_b_that_ends_in_padding():
    """generate continues after the last column: a row with a shorter Part B (right-padded) would be
    read and continued from a padding column. recommend's rows (Part B = [START]) are never padded."""
    model = build("glm")
    rows = [encode([30, (10, 11, 12), 31, "M"], [[(14,)]]), encode([(16, 19), 31, "M"], [[]])]  # [START] 14 | [START]
    batch = collate(rows)
    del batch["labels"]
    assert batch["attention_mask"][:, -1].tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"rows \[1\] end in padding: to generate, Part B must end every row at the last column"):
        model.generate(**batch, max_new_tokens=2, num_beams=1, do_sample=False)
    alone = collate(rows[1:])
    del alone["labels"]
    assert model.generate(**alone, max_new_tokens=2, num_beams=1, do_sample=False).shape[0] == 1


# -- 5. LoRA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_lora_targets_trainable_parameters_saving_and_merging(kind, tmp_path):
    model = build(kind)
    model.enable_lora(r=4)
    adapted = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == set(BACKBONES[model.backbone_kind]["lora_targets"])
    if kind == "glm":
        assert adapted == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}  # the paper's four
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    extra = {"intra_position_embeddings.weight"} if kind == "llama" else set()  # zero-init: must learn
    assert {n for n in trainable if "lora_" not in n} == extra
    assert all(("lora_A" in n or "lora_B" in n) for n in trainable - extra) and trainable - extra
    with torch.no_grad():  # B = 0 at init: give the adapters an effect
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    batch = collate(ROWS)
    want = logits(model, batch)
    model.save_pretrained(tmp_path / "lora")
    loaded = RecSysGLMForInfilling.from_pretrained(tmp_path / "lora").eval()
    assert loaded.config.lora == model.config.lora
    assert torch.allclose(logits(loaded, batch), want, atol=1e-6)
    loaded.merge_lora()
    assert not any(hasattr(m, "lora_A") for m in loaded.modules()) and loaded.config.lora is None
    assert torch.allclose(logits(loaded, batch), want, atol=1e-5)


def test_merge_lora_removes_the_gradient_mask_of_the_added_token_rows():
    """train_added_token_rows masks the gradient of the backbone's own rows while LoRA trains; after
    merge_lora every parameter trains, those rows included (continued full fine-tuning)."""
    from genrec_hf.training.recipes import train_added_token_rows

    model = build("llama", text=text_config("llama", tie_word_embeddings=False)).train()
    model.enable_lora(r=2)
    first_new = 20  # ROWS hold tokens on both sides: 10-16 "own", 20-37 "added"
    assert train_added_token_rows(model, first_new) == V - first_new

    def row_grads():
        model.zero_grad(set_to_none=True)
        model(**collate(ROWS)).loss.backward()
        return [w.grad.abs().amax(dim=1) for w in (model.get_input_embeddings().weight, model.lm_head.weight)]

    for grad in row_grads():
        assert float(grad[:first_new].max()) == 0.0 and float(grad[first_new:].max()) > 0
    model.merge_lora()
    assert not model._frozen_row_hooks
    for grad in row_grads():
        assert float(grad[10:17].min()) > 0  # the own rows the batch uses train now


@pytest.mark.parametrize("kind", ["glm", "llama-untied"])
def test_added_token_rows_start_distinct(kind):
    """transformers' mean resizing scales the covariance by 1e-9: [MASK], [START], [END], ... would
    start identical. They start about as far apart as two old rows."""
    text = text_config("llama", tie_word_embeddings=False) if kind == "llama-untied" else None
    model = build(kind.split("-")[0], catalog=False, text=text)
    model.resize_token_embeddings(V + 5)
    layers = [model.get_input_embeddings()] + ([model.lm_head] if kind == "llama-untied" else [])
    for layer in layers:
        weight = layer.weight.detach()

        def spread(rows):
            d = torch.cdist(rows, rows)
            return float(d[~torch.eye(len(rows), dtype=torch.bool)].mean())

        ratio = spread(weight[V:]) / spread(weight[:V])
        assert 0.7 < ratio < 1.4, (type(layer).__name__, ratio)
        assert float((weight[V:].mean(0) - weight[:V].mean(0)).abs().max()) < 3 * float(weight[:V].std(0).max())


# -- 6. THUDM converter -----------------------------------------------------------------------------

def thudm_glm_logits(sd, ids, positions, sep, heads):
    """THUDM GLM's forward (mpu/transformer.py) written from its key names, for one unpadded row:
    ltor mask (key j visible iff j < sep or j <= i), scores * m - 10000 (1 - m), [q|k|v] split in thirds."""
    g = lambda k: sd[k].float()
    h = g("glm.word_embeddings.weight")[ids] + g("glm.transformer.position_embeddings.weight")[positions[0]] \
        + g("glm.transformer.block_position_embeddings.weight")[positions[1]]
    seq, hidden = h.shape
    d = hidden // heads
    m = torch.ones(seq, seq).tril()
    m[:, :sep] = 1
    layers = len({k.split(".")[3] for k in sd if ".layers." in k})
    for i in range(layers):
        p = f"glm.transformer.layers.{i}."
        ln = lambda x, n: F.layer_norm(x, (hidden,), g(p + n + ".weight"), g(p + n + ".bias"), 1e-5)
        q, k, v = torch.split(F.linear(ln(h, "input_layernorm"), g(p + "attention.query_key_value.weight"),
                                       g(p + "attention.query_key_value.bias")), hidden, dim=-1)
        q, k, v = (t.view(seq, heads, d).transpose(0, 1) for t in (q, k, v))
        scores = torch.matmul(q / math.sqrt(d), k.transpose(-1, -2))
        scores = scores * m - 10000.0 * (1.0 - m)
        ctx = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(seq, hidden)
        h = h + F.linear(ctx, g(p + "attention.dense.weight"), g(p + "attention.dense.bias"))
        x = ln(h, "post_attention_layernorm")
        x = F.linear(x, g(p + "mlp.dense_h_to_4h.weight"), g(p + "mlp.dense_h_to_4h.bias"))
        x = 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))
        h = h + F.linear(x, g(p + "mlp.dense_4h_to_h.weight"), g(p + "mlp.dense_4h_to_h.bias"))
    h = F.layer_norm(h, (hidden,), g("glm.transformer.final_layernorm.weight"), g("glm.transformer.final_layernorm.bias"), 1e-5)
    return h @ g("glm.word_embeddings.weight").T


def test_thudm_converter_round_trip(tmp_path):
    source = build("glm", catalog=False, text=text_config("glm", hidden_dropout=0.0, attention_dropout=0.0))
    thudm = {k: v.clone().half() for k, v in source.state_dict().items() if k.startswith("glm.")}  # glm-10b ships fp16
    assert "glm.transformer.layers.1.attention.query_key_value.weight" in thudm
    # THUDM's Hugging Face layout (a folder) and its Megatron layout ({"module": ...}, no "glm." prefix)
    (tmp_path / "hf").mkdir()
    torch.save(thudm, tmp_path / "hf" / "pytorch_model.bin")
    torch.save({"module": {k[len("glm."):]: v for k, v in thudm.items()}}, tmp_path / "megatron.pt")
    batch = collate(ROWS[:1])
    with torch.no_grad():
        source.load_state_dict({k: v.float() for k, v in thudm.items()}, strict=False)  # the same fp16-rounded weights
    want = logits(source, batch)[0]
    reference = thudm_glm_logits(thudm, batch["input_ids"][0], batch["position_ids"][0], int(batch["part_a_length"][0]), 4)
    assert torch.allclose(want, reference, atol=1e-4)  # the architecture is THUDM's
    for path in (tmp_path / "hf", tmp_path / "megatron.pt"):
        model = RecSysGLMForInfilling.from_thudm_glm(path, num_attention_heads=4, num_items=len(ITEMS), **TOKENS).eval()
        assert model.config.text_config.max_sequence_length == 64 and model.config.text_config.num_layers == 2
        assert torch.allclose(logits(model, batch)[0], want, atol=1e-6)
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    model.set_catalog(torch.tensor([row + [-1] * (4 - len(row)) for row in ITEMS]))
    assert bool((model.recommend(**inference_batch(), top_k=3).item_ids >= 0).all())
    half = RecSysGLMForInfilling.from_thudm_glm(thudm, dtype=torch.bfloat16, num_attention_heads=4, lora={"r": 2, "target_modules": ["dense"]}, **TOKENS)
    assert half.get_input_embeddings().weight.dtype == torch.bfloat16 and half.config.lora["r"] == 2
    missing = dict(thudm)
    del missing["glm.transformer.layers.1.mlp.dense_4h_to_h.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['glm.transformer.layers.1.mlp.dense_4h_to_h.bias'\]"):
        convert_thudm_glm_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected keys .*lm_head.weight"):
        convert_thudm_glm_state_dict({**thudm, "lm_head.weight": thudm["glm.word_embeddings.weight"]})
    with pytest.raises(ValueError, match="does not match the weights"):
        RecSysGLMForInfilling.from_thudm_glm(thudm, hidden_size=64)


# -- 7. saving, init, Trainer -----------------------------------------------------------------------

def test_save_load_and_remote_code(tmp_path, run_without_genrec_hf):
    batch = inference_batch()
    expected = {}
    for kind in KINDS:
        model = build(kind)
        ckpt = tmp_path / kind
        model.save_pretrained(ckpt)
        for name in ("modeling_recsys_glm.py", "configuration_recsys_glm.py", "trie.py", "saving.py"):
            assert (ckpt / name).is_file() and not (ckpt / name).is_symlink(), name
        loaded = RecSysGLMForInfilling.from_pretrained(ckpt).eval()
        assert loaded.config.auto_map["AutoModel"] == "modeling_recsys_glm.RecSysGLMForInfilling"
        assert torch.equal(loaded.item_token_ids, model.item_token_ids)  # the catalog travels with the weights
        assert torch.equal(logits(loaded, batch), logits(model, batch))
        rec = model.recommend(**batch, top_k=3)
        got = loaded.recommend(**batch, top_k=3)
        assert torch.equal(got.item_ids, rec.item_ids) and torch.equal(got.scores, rec.scores)
        expected[kind] = logits(model, batch)
    torch.save({"batch": batch, "expected": expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["genrec_hf"] = None
        import torch
        from transformers import AutoModel
        e = torch.load({str(tmp_path / 'expected.pt')!r})
        for kind in {KINDS!r}:
            model = AutoModel.from_pretrained({str(tmp_path)!r} + "/" + kind, trust_remote_code=True).eval()
            assert "genrec_hf" not in type(model).__module__ and type(model).__name__ == "RecSysGLMForInfilling"
            with torch.no_grad():
                out = model(**e["batch"]).logits
            assert torch.equal(out, e["expected"][kind]), kind
            assert bool((model.recommend(**e["batch"], top_k=3).item_ids >= 0).all())
        print("remote code ok")
    """)
    run_without_genrec_hf(script, "remote code ok")


def test_every_created_parameter_starts_at_its_std():
    text = text_config("glm", hidden_size=64, num_layers=2, vocab_size=256)
    model = build("glm", catalog=False, text=text).requires_grad_(False)
    scaled = 0.02 / math.sqrt(2 * 2)
    seen = set()
    for name, p in model.named_parameters():
        if name.endswith("layernorm.weight"):
            assert bool((p == 1).all()), name
        elif name.endswith(".bias"):
            assert bool((p == 0).all()), name
        else:
            want = scaled if name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")) else 0.02
            assert abs(float(p.std()) / want - 1) < 0.1 and abs(float(p.mean())) < want / 5, (name, float(p.std()))
        seen.add(name)
    assert seen == {n for n, _ in model.named_parameters()} and len(seen) == 3 + 2 * 12 + 2

    rotary = build("llama", catalog=False, text=text_config("llama", tie_word_embeddings=False), as_initialised=True)
    rotary.requires_grad_(False)
    assert bool((rotary.intra_position_embeddings.weight == 0).all())  # the backbone starts as it was
    assert abs(float(rotary.lm_head.weight.std()) / 0.02 - 1) < 0.15
    for name, p in rotary.model.named_parameters():  # nothing left at PyTorch's N(0, 1)
        assert float(p.std()) < 0.1 or name.endswith("norm.weight"), name
    # wrapping a (pretrained) backbone keeps its weights
    backbone = RecSysGLMForInfilling(RecSysGLMConfig(text_config=text_config("llama"), **TOKENS)).model
    with torch.no_grad():
        backbone.embed_tokens.weight.fill_(0.5)
    wrapped = RecSysGLMForInfilling.from_backbone(backbone, vocab_size=V + 2, **TOKENS)
    assert bool((wrapped.get_input_embeddings().weight[:V] == 0.5).all())
    assert wrapped.config.text_config.vocab_size == V + 2


@pytest.mark.parametrize("kind", ["glm", "llama-lora"])
def test_trainer_runs_two_steps(kind, tmp_path):
    model = build(kind.split("-")[0]).train()
    if kind.endswith("lora"):
        model.enable_lora()
    batch = collate(ROWS * 2)
    entity = torch.full_like(batch["input_ids"], -1)  # the collator's entity index: accepted and dropped
    rows = [{k: v[i] for k, v in {**batch, "entity_ids": entity}.items()} for i in range(4)]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False,
                             max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, save_strategy="no",
                             logging_steps=1, disable_tqdm=True)
    result = Trainer(model=model, args=args, train_dataset=rows).train()
    assert math.isfinite(result.training_loss)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)


# -- 8. bad inputs ----------------------------------------------------------------------------------

def test_bad_inputs_give_clear_errors():
    batch = inference_batch()
    model = build("glm", catalog=False)
    with pytest.raises(ValueError, match="catalog is not set"):
        model.recommend(**batch)
    model = build("glm")
    with pytest.raises(ValueError, match="empty input"):
        model.recommend(**{**batch, "input_ids": batch["input_ids"][:0]})
    with pytest.raises(ValueError, match=r"position_ids must be \[batch, 2, seq\]"):
        model.recommend(**{**batch, "position_ids": batch["position_ids"][:, 0]})
    with pytest.raises(ValueError, match=r"position_ids must be \[batch, 2, seq\]"):
        model(**{**batch, "position_ids": batch["position_ids"].permute(0, 2, 1)})
    with pytest.raises(ValueError, match="needs position_ids"):
        model(**{k: v for k, v in batch.items() if k != "position_ids"})
    with pytest.raises(ValueError, match="part_a_length"):
        model(**{k: v for k, v in batch.items() if k != "part_a_length"})
    with pytest.raises(ValueError, match="outside the position table"):
        model(**{**batch, "position_ids": batch["position_ids"] + 64})
    no_start = {**batch, "input_ids": batch["input_ids"].masked_fill(batch["input_ids"] == START, 30)}
    with pytest.raises(ValueError, match=r"Part B must hold a \[START\]"):
        model.recommend(**no_start)
    with pytest.raises(ValueError, match="exclude_history=True needs history_item_ids"):
        model.recommend(**batch, exclude_history=True)
    with pytest.raises(ValueError, match="catalog size mismatch"):
        model.set_catalog(torch.tensor([[10, 11]]))
    with pytest.raises(ValueError, match="unsupported backbone 'gpt2'"):
        RecSysGLMConfig(text_config={"model_type": "gpt2"})
    assert RecSysGLMConfig.model_type == "recsys_glm" and GLMTextConfig.model_type == "recsys_glm_text"
    # a grown vocabulary (the processor's special tokens) rebuilds the trie
    trie = model.trie
    model.resize_token_embeddings(V + 3)
    assert model.trie is not trie and model.trie.vocab_size == V + 3 and model.config.text_config.vocab_size == V + 3
    model.resize_token_embeddings(V + 40, mean_resizing=False)  # new rows at the model's std, not N(0, 1)
    assert type(model.get_input_embeddings()).__name__ == "GLMEmbedding"
    assert float(model.get_input_embeddings().weight[V + 3:].detach().std()) < 0.05
    rotary = build("llama", text=text_config("llama", tie_word_embeddings=False))  # an untied head grows too
    rotary.resize_token_embeddings(V + 40, mean_resizing=False)
    assert type(rotary.lm_head).__name__ == "RecSysGLMLMHead" and rotary.lm_head.weight.shape[0] == V + 40
    assert float(rotary.lm_head.weight[V:].detach().std()) < 0.05
