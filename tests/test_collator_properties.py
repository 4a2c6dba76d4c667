"""Property tests (issue 13) of every data collator: a batch either pads its rows by the documented
rules or the collator raises a clear error, never a silently wrong batch.

Collators: SeqRecCollator (ST2SI and item-ID rows), QueryStateCollator, LowerStateCollator
(training/st2si.py), GenRecCollator (training/genrec.py), LancerCollator and
LancerKnowledgeCollator (training/lancer.py), RecSysGLMPretrainCollator, RecSysGLMNextItemCollator
and RecSysGLMMultiTaskCollator (training/recsys_glm.py).

Properties, per collator: long-typed tensors of one width per key; the attention mask is 1 exactly
on the real tokens; un-padding a row gives back what the processor writes for it (padding never
changes content, on the collator's padding side); labels are -100 on padding and valid catalog /
token ids elsewhere; deterministic collators are invariant to row order and give a row collated
alone the same content as in a larger batch; bad rows raise ValueError naming the problem.
Processors are tiny (a 24-item catalog with titles of 1-5 words, tokenizers trained on the fly);
histories are ragged, hold duplicates and run past max_items / max_length.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import WORDS
from genrec_hf import SeqRecProcessor
from genrec_hf.backbones import train_tokenizer
from genrec_hf.data import ItemCatalog
from genrec_hf.processing import LANCER_DEFAULTS, RECSYS_GLM_DEFAULTS, ST2SI_DEFAULTS
from genrec_hf.training.genrec import GenRecCollator
from genrec_hf.training.lancer import LancerCollator, LancerKnowledgeCollator
from genrec_hf.training.recsys_glm import (
    BATCH_KEYS,
    RecSysGLMMultiTaskCollator,
    RecSysGLMNextItemCollator,
    RecSysGLMPretrainCollator,
)
from genrec_hf.training.st2si import LowerStateCollator, QueryStateCollator, SeqRecCollator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 24
USERS = ["1", "2", "3"]
# small example counts: the whole file runs in well under 30 s on 2 shared cores
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

item = st.integers(0, N - 1)
# ragged: mostly short, some past every max_items / max_length below; duplicates come naturally
history = st.lists(item, min_size=1, max_size=30)
train_items = st.lists(item, min_size=2, max_size=30)
bad_ids = st.one_of(st.integers(max_value=-1), st.integers(min_value=N), st.floats(allow_nan=True),
                    st.booleans(), st.text(max_size=3), st.none())


def _catalog() -> ItemCatalog:
    # titles of 1 to 5 words plus a number: item texts of 2 to 7 tokens
    titles = [" ".join(WORDS[(i * k + 3) % len(WORDS)] for k in range(1, 2 + i % 5)) + f" {i * 37}" for i in range(N)]
    return ItemCatalog([str(100 + i) for i in range(N)], [{"title": t} for t in titles])


CATALOG = _catalog()


def _tokenizer(*extra: str):
    """A fresh tokenizer per processor: processors add their special tokens to it."""
    return train_tokenizer(CATALOG.texts() + list(extra), vocab_size=400)


# -- processors (built once) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def st2si():
    """Multi-query with a token budget that truncates, and the single-query ablation without one."""
    return {
        "multi": SeqRecProcessor(_tokenizer(ST2SI_DEFAULTS["alignment_instruction"]), CATALOG, method="st2si",
                                 max_items=6, max_length=25),
        "single": SeqRecProcessor(_tokenizer(), CATALOG, method="st2si", max_items=4, multi_query=False),
    }


@pytest.fixture(scope="module")
def item_ids():
    return SeqRecProcessor(None, CATALOG, method="sasrec", max_items=7)


@pytest.fixture(scope="module")
def genrec():
    texts = [f"item_{i}" for i in range(N)] + [f"user_{r}" for r in range(len(USERS) + 1)] + ["user_unk"]
    return SeqRecProcessor(train_tokenizer(texts, vocab_size=300), CATALOG, method="genrec", users=USERS,
                           max_items=6, max_length=24)


@pytest.fixture(scope="module")
def lancer():
    tok = lambda: _tokenizer(LANCER_DEFAULTS["instruction"])  # noqa: E731
    return {
        "all": SeqRecProcessor(tok(), CATALOG, method="lancer", variant="title", max_items=4, max_length=40),
        "causal": SeqRecProcessor(tok(), CATALOG, method="lancer", variant="title", max_items=3,
                                  prompt_visibility="causal", loss_on="target"),
    }


@pytest.fixture(scope="module")
def glm():
    return SeqRecProcessor(_tokenizer(RECSYS_GLM_DEFAULTS["instruction"]), CATALOG, method="recsys_glm",
                           max_items=5, max_length=60)


@pytest.fixture(scope="module")
def glm_tasks():
    """Task prompts (candidates, reviews) need more room than next-item rows: the default max_length."""
    return SeqRecProcessor(_tokenizer(RECSYS_GLM_DEFAULTS["instruction"]), CATALOG, method="recsys_glm", max_items=5)


# -- padding helpers ---------------------------------------------------------------------------------

def check_padded(t: torch.Tensor, rows, fill, side: str = "right", width: int | None = None):
    """t [batch, width] holds each row on `side`, `fill` elsewhere; width = the longest row (or `width`)."""
    rows = [list(r) for r in rows]
    width = max(len(r) for r in rows) if width is None else width
    assert t.dtype == torch.long and tuple(t.shape) == (len(rows), width), (t.dtype, t.shape)
    for i, r in enumerate(rows):
        content, rest = (t[i, :len(r)], t[i, len(r):]) if side == "right" else (t[i, width - len(r):], t[i, :width - len(r)])
        assert content.tolist() == r, i
        assert bool((rest == fill).all()), i


def check_mask_marks_real_tokens(batch, lengths, side: str = "right"):
    check_padded(batch["attention_mask"], [[1] * n for n in lengths], 0, side)


def same_modulo_padding(full: dict, alone: dict, row: int, fills: dict, offsets: dict | None = None):
    """Row `row` of `full` is `alone`'s only row placed at an offset on the last axis (0: right
    padding; the default for keys not in offsets), and `fills[key]` around it."""
    assert set(full) == set(alone)
    for key, fill in fills.items():
        a, f = alone[key][0], full[key][row]
        w, off = a.shape[-1], (offsets or {}).get(key, 0)
        if off == "left":
            off = f.shape[-1] - w
        assert torch.equal(f[..., off:off + w], a), key
        outside = torch.cat([f[..., :off], f[..., off + w:]], dim=-1)
        assert bool((outside == fill).all()), key


def check_order_invariance(collate, features, order, fills, offsets_of=None):
    """collate(permuted rows) = the permuted batch; each row alone = its batch row modulo padding."""
    full = collate(features)
    permuted = collate([features[i] for i in order])
    assert set(permuted) == set(full)
    for key in full:
        assert torch.equal(permuted[key], full[key][list(order)]), key
    for i, f in enumerate(features):
        alone = collate([f])
        same_modulo_padding(full, alone, i, fills, offsets_of(full, alone, i) if offsets_of else None)
    return full


# -- SeqRecCollator: ST2SI rows ----------------------------------------------------------------------

st2si_rows = st.lists(st.tuples(history, st.one_of(st.none(), item)), min_size=1, max_size=6)


@SOME
@given(st.sampled_from(["multi", "single"]), st2si_rows, st.data())
def test_st2si_rows_are_padded_without_changing_content(st2si, which, rows, data):
    p = st2si[which]
    features = [p.encode(h, t) for h, t in rows]
    batch = SeqRecCollator(p)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "history_item_ids"}
    lengths = [len(f["input_ids"]) for f in features]
    check_padded(batch["input_ids"], [f["input_ids"] for f in features], p.tokenizer.pad_token_id)
    check_mask_marks_real_tokens(batch, lengths)
    check_padded(batch["labels"], [f["labels"] for f in features], -100)
    check_padded(batch["history_item_ids"], [h for h, _ in rows], -1)
    q = p.query_token_id
    assert q != p.tokenizer.pad_token_id
    for i, (h, target) in enumerate(rows):
        real = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        window = p.window(h)
        # one label per query, the item after each window item (the last: the target), none on padding
        labels = batch["labels"][i][: real.count(q)].tolist()
        if p.settings["multi_query"]:
            assert real.count(q) == len(window) and labels == window[1:] + [-100 if target is None else target]
        else:
            assert real.count(q) == 1 and labels == [-100 if target is None else target]
        assert bool((batch["labels"][i][real.count(q):] == -100).all())
        assert all(0 <= x < N for x in labels if x != -100)
        if p.settings["max_length"] is not None:
            assert len(real) <= p.settings["max_length"]
        assert len(window) <= p.settings["max_items"] and window == h[len(h) - len(window):]
    order = data.draw(st.permutations(range(len(features))))
    check_order_invariance(SeqRecCollator(p), features, order,
                           {"input_ids": p.tokenizer.pad_token_id, "attention_mask": 0, "labels": -100, "history_item_ids": -1})


# -- SeqRecCollator: item-ID rows (SASRec, GRU4Rec) ----------------------------------------------------

@SOME
@given(st.lists(st.tuples(history, item), min_size=1, max_size=6), st.booleans(), st.data())
def test_item_id_rows_shift_ids_by_one_and_label_every_real_position(item_ids, rows, with_history, data):
    p = item_ids
    features = [p.encode(h, t) for h, t in rows]
    if not with_history:  # training rows carry no history_item_ids
        features = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
    batch = SeqRecCollator(p)(features)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    lengths = [len(f["input_ids"]) for f in features]
    check_padded(ids, [f["input_ids"] for f in features], 0)
    check_mask_marks_real_tokens(batch, lengths)
    check_padded(labels, [f["labels"] for f in features], -100)
    assert labels.shape == ids.shape and bool((labels[mask == 0] == -100).all())  # no label on padding
    assert ("history_item_ids" in batch) == with_history
    for i, (h, target) in enumerate(rows):
        n = lengths[i]
        window = h[-p.settings["max_items"]:]
        assert ids[i, :n].tolist() == [x + 1 for x in window] and 1 <= int(ids[i, :n].min()) and int(ids[i, :n].max()) <= N
        assert labels[i, :n].tolist() == window[1:] + [target]  # the next item at each position
    fills = {"input_ids": 0, "attention_mask": 0, "labels": -100} | ({"history_item_ids": -1} if with_history else {})
    check_order_invariance(SeqRecCollator(p), features, data.draw(st.permutations(range(len(features)))), fills)


def test_seqrec_collator_refuses_rows_with_different_keys(item_ids):
    """Keys came from the first row: a labelled row after an unlabelled one lost its labels silently,
    the other order raised a bare KeyError."""
    collate = SeqRecCollator(item_ids)
    labelled, bare = {"input_ids": [1, 2], "labels": [1, 5]}, {"input_ids": [3]}
    for batch in ([bare, labelled], [labelled, bare]):
        with pytest.raises(ValueError, match=r"row \d has no 'labels'"):
            collate(batch)


# -- QueryStateCollator --------------------------------------------------------------------------------

@st.composite
def query_state_rows(draw):
    hidden = draw(st.integers(1, 5))
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):  # a validation row: one query [hidden] and one label
            rows.append({"query_hidden_states": torch.randn(hidden), "labels": draw(item)})
        else:
            q = draw(st.integers(1, 5))
            rows.append({"query_hidden_states": torch.randn(q, hidden), "labels": torch.tensor(draw(st.lists(item, min_size=q, max_size=q)))})
    return rows


@SOME
@given(query_state_rows(), st.data())
def test_query_states_are_padded_with_zeros_and_masked_labels(rows, data):
    batch = QueryStateCollator()(rows)
    states, mask, labels = batch["query_hidden_states"], batch["query_mask"], batch["labels"]
    counts = [torch.atleast_2d(r["query_hidden_states"]).shape[0] for r in rows]
    hidden = rows[0]["query_hidden_states"].shape[-1]
    assert states.shape == (len(rows), max(counts), hidden) and states.dtype == torch.float32
    assert mask.dtype == torch.bool and labels.dtype == torch.long and mask.shape == labels.shape == states.shape[:2]
    for i, (r, q) in enumerate(zip(rows, counts)):
        assert mask[i].tolist() == [True] * q + [False] * (max(counts) - q)
        assert torch.equal(states[i, :q], torch.atleast_2d(r["query_hidden_states"]))
        assert bool((states[i, q:] == 0).all())
        assert labels[i, :q].tolist() == torch.as_tensor(r["labels"]).reshape(-1).tolist()
        assert bool((labels[i, q:] == -100).all())
    check_order_invariance(QueryStateCollator(), rows, data.draw(st.permutations(range(len(rows)))),
                           {"labels": -100, "query_mask": False})
    for i, r in enumerate(rows):  # the states (3-D) row by row
        alone = QueryStateCollator()([r])["query_hidden_states"][0]
        assert torch.equal(states[i, : alone.shape[0]], alone) and bool((states[i, alone.shape[0]:] == 0).all())


def test_query_state_rows_must_agree_with_their_labels_and_hidden_size():
    """One label for three queries was broadcast to all three; a [q, 1] row was broadcast across the
    hidden size of the others."""
    collate = QueryStateCollator()
    with pytest.raises(ValueError, match="row 0 has 1 label for 3 query states"):
        collate([{"query_hidden_states": torch.zeros(3, 4), "labels": [5]}])
    with pytest.raises(ValueError, match="row 1 has 2 labels for 3 query states"):
        collate([{"query_hidden_states": torch.zeros(1, 4), "labels": 1}, {"query_hidden_states": torch.zeros(3, 4), "labels": [5, 6]}])
    with pytest.raises(ValueError, match="hidden size 1 in row 1, 4 in row 0"):
        collate([{"query_hidden_states": torch.zeros(2, 4), "labels": [1, 2]}, {"query_hidden_states": torch.zeros(2, 1), "labels": [1, 2]}])


# -- LowerStateCollator ----------------------------------------------------------------------------

@FEW
@given(st2si_rows, st.integers(1, 4), st.data())
def test_lower_states_are_aligned_with_the_tokens_and_zero_on_padding(st2si, rows, hidden, data):
    p = st2si["multi"]
    features = []
    for h, t in rows:
        row = p.encode(h, t)
        features.append({"input_ids": row["input_ids"], "labels": row["labels"],
                         "lower_hidden_states": torch.randn(len(row["input_ids"]), hidden)})
    batch = LowerStateCollator(p)(features)
    lengths = [len(f["input_ids"]) for f in features]
    check_padded(batch["input_ids"], [f["input_ids"] for f in features], p.tokenizer.pad_token_id)
    check_mask_marks_real_tokens(batch, lengths)
    check_padded(batch["labels"], [f["labels"] for f in features], -100)
    states = batch["lower_hidden_states"]
    assert states.shape == (len(rows), max(lengths), hidden) and states.dtype == torch.float32
    for i, (f, n) in enumerate(zip(features, lengths)):
        assert torch.equal(states[i, :n], f["lower_hidden_states"]) and bool((states[i, n:] == 0).all())
    check_order_invariance(LowerStateCollator(p), features, data.draw(st.permutations(range(len(features)))),
                           {"input_ids": p.tokenizer.pad_token_id, "attention_mask": 0, "labels": -100})


def test_lower_states_must_cover_every_token(st2si):
    """States shorter than the tokens were zero-filled at real tokens; [len, 1] states were broadcast."""
    p = st2si["multi"]
    row = p.encode([1, 2], 3)
    n = len(row["input_ids"])
    collate = LowerStateCollator(p)
    with pytest.raises(ValueError, match=rf"row 0 has lower_hidden_states for {n - 2} tokens but {n} input_ids"):
        collate([{**row, "lower_hidden_states": torch.ones(n - 2, 4)}])
    with pytest.raises(ValueError, match="hidden size 1 in row 1, 4 in row 0"):
        collate([{**row, "lower_hidden_states": torch.ones(n, 4)}, {**row, "lower_hidden_states": torch.ones(n, 1)}])


# -- GenRecCollator ----------------------------------------------------------------------------------

user = st.sampled_from(USERS + ["99", None])  # known, unknown, none
genrec_eval_row = st.builds(lambda h, t, u: {"history": h, "target": t, "user": u}, history, item, user)
genrec_train_row = st.builds(lambda xs, u: {"items": xs, "user": u}, train_items, user)
GENREC_KEYS = ("input_ids", "token_user_ids", "token_item_ids", "labels")
GENREC_FILLS = {"attention_mask": 0, "token_user_ids": -1, "token_item_ids": -1, "labels": -100}


def _genrec_candidates(collator, f) -> list[dict]:
    """Every row the collator may write for a raw row (its random draws: mask position, cut, unknown user)."""
    p = collator.processor
    if "target" in f:
        return [p.encode(f["history"], f["target"], user=f["user"])]
    users = [f["user"]] + ([None] if collator.unknown_user_prob else [])
    items = f["items"]
    if collator.stage == "pretrain":
        return [p.encode(items, user=u, mask_position=m) for u in users for m in range(len(p.window(items)))]
    cuts = [len(items) - 1] if collator.finetune_targets == "last" else range(1, len(items))
    return [p.encode(items[:c], items[c], user=u) for u in users for c in cuts]


@SOME
@given(st.lists(st.one_of(genrec_eval_row, genrec_train_row), min_size=1, max_size=5),
       st.sampled_from([("pretrain", "last"), ("finetune", "last"), ("finetune", "random")]),
       st.sampled_from([0.0, 0.5]), st.integers(0, 3))
def test_genrec_batches_hold_rows_the_processor_writes(genrec, features, stage_targets, unknown, seed):
    p = genrec
    stage, targets = stage_targets
    collator = GenRecCollator(p, stage, finetune_targets=targets, seed=seed, unknown_user_prob=unknown)
    batch = collator(features)
    assert set(batch) == set(GENREC_KEYS) | {"attention_mask"}
    width = batch["input_ids"].shape[1]
    table = {tuple(x for x in r if x >= 0) for r in p.item_token_table().tolist()}
    for i, f in enumerate(features):
        n = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert bool((batch["input_ids"][i, n:] == p.tokenizer.pad_token_id).all())
        written = {k: batch[k][i, :n].tolist() for k in GENREC_KEYS if k != "labels"}
        labels = batch["labels"][i].tolist()
        written["labels"] = labels[: len(labels) - next((j for j, x in enumerate(reversed(labels)) if x != -100), 0)]
        assert any(all(written[k] == c[k] for k in GENREC_KEYS) for c in _genrec_candidates(collator, f)), i
        for k in ("token_user_ids", "token_item_ids"):
            assert bool((batch[k][i, n:] == -1).all())
        assert tuple(written["labels"]) in table  # the labels spell one catalog item (+ eos)
        assert n <= p.settings["max_length"]
        real = written["input_ids"]
        assert real.count(p.format.mask_token_id) == 1  # one [MASK]: appended or in place of one item
        assert all(0 <= x < len(p.tokenizer) for x in real)


@SOME
@given(st.lists(st.one_of(genrec_eval_row, genrec_train_row), min_size=1, max_size=5), st.data())
def test_genrec_finetune_batches_are_invariant_to_row_order(genrec, features, data):
    """Evaluation rows and 'last' targets draw nothing (unknown_user_prob=0): the batch is a function of its rows."""
    collate = GenRecCollator(genrec, "finetune", finetune_targets="last", unknown_user_prob=0.0)
    full = check_order_invariance(collate, features, data.draw(st.permutations(range(len(features)))),
                                  {"input_ids": genrec.tokenizer.pad_token_id, **GENREC_FILLS})
    for i, f in enumerate(features):
        row = genrec.encode(f["history"], f["target"], user=f["user"]) if "target" in f else \
            genrec.encode(f["items"][:-1], f["items"][-1], user=f["user"])
        check_padded(full["input_ids"][i:i + 1], [row["input_ids"]], genrec.tokenizer.pad_token_id, width=full["input_ids"].shape[1])


def row_with_bad_id(good, bad, position, where):
    """A raw row whose items, history or target holds `bad` (good rows' ids elsewhere)."""
    if where == "target":
        return {"history": good or [0], "target": bad}
    items = list(good) + [0]
    items.insert(min(position, len(items)), bad)
    return {"items": items} if where == "items" else {"history": items, "target": 1}


@SOME
@given(st.lists(item, max_size=5), bad_ids, st.integers(0, 5), st.sampled_from(["items", "history", "target"]),
       st.sampled_from(["pretrain", "finetune"]))
def test_genrec_refuses_an_unknown_or_non_integer_item_id(genrec, good, bad, position, where, stage):
    """-1 used to index the token table from the end (silently the last catalog item)."""
    row = row_with_bad_id(good, bad, position, where)
    with pytest.raises(ValueError, match=r"unknown item id|not an integer catalog id"):
        GenRecCollator(genrec, stage)([{"history": [1, 2], "target": 3}, row])


def test_genrec_refuses_empty_and_short_rows_clearly(genrec):
    for stage in ("pretrain", "finetune"):
        with pytest.raises(ValueError, match="empty history in row 1"):  # was "max_length=24 cannot hold even the newest item"
            GenRecCollator(genrec, stage)([{"items": [1, 2]}, {"items": []}])
        with pytest.raises(ValueError, match="empty history in row 0"):
            GenRecCollator(genrec, stage)([{"history": [], "target": 1}])
    with pytest.raises(ValueError, match="finetuning needs at least two training items"):
        GenRecCollator(genrec, "finetune")([{"items": [1], "user": "1"}])
    with pytest.raises(KeyError, match="items"):
        GenRecCollator(genrec, "finetune")([{"sequence": [1, 2]}])


# -- LancerCollator ----------------------------------------------------------------------------------

lancer_eval_row = st.builds(lambda h, t: {"history": h, "target": t}, history, item)
lancer_train_row = st.builds(lambda xs: {"items": xs, "user": "u"}, train_items)
LEFT_KEYS = {"input_ids", "attention_mask", "labels", "prompt_slots_visible"}


def _lancer_candidates(collator, f) -> list[dict]:
    p = collator.processor
    if "target" in f:
        return [p.encode(f["history"], f["target"])]
    items = f["items"]
    cuts = [len(items) - 1] if collator.windows == "last" else range(1, len(items))
    return [p.encode(items[:c], items[c]) for c in cuts]


def _lancer_fills(p) -> dict:
    return {"input_ids": p.tokenizer.pad_token_id, "attention_mask": 0, "labels": -100, "prompt_item_ids": -1,
            **({"prompt_slots_visible": 0} if p.settings["prompt_visibility"] == "causal" else {})}


@SOME
@given(st.sampled_from(["all", "causal"]), st.lists(st.one_of(lancer_eval_row, lancer_train_row), min_size=1, max_size=5),
       st.sampled_from(["last", "random"]), st.integers(0, 3))
def test_lancer_batches_are_left_padded_rows_of_the_processor(lancer, which, features, windows, seed):
    p = lancer[which]
    collator = LancerCollator(p, windows=windows, seed=seed)
    batch = collator(features)
    fills = _lancer_fills(p)
    assert set(batch) == set(fills)
    width = batch["input_ids"].shape[1]
    for i, f in enumerate(features):
        n = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i].tolist() == [0] * (width - n) + [1] * n  # left: the LM continues the text
        written = {k: batch[k][i, width - n:].tolist() for k in LEFT_KEYS - {"attention_mask"} if k in batch}
        for k in LEFT_KEYS & set(batch):
            assert bool((batch[k][i, : width - n] == fills[k]).all()), k
        slots = batch["prompt_item_ids"][i].tolist()
        written["prompt_item_ids"] = [x for x in slots if x != -1]
        assert slots == written["prompt_item_ids"] + [-1] * (len(slots) - len(written["prompt_item_ids"]))
        keys = set(written)
        assert any(all(written[k] == c[k] for k in keys) for c in _lancer_candidates(collator, f)), i
        # labels: the tokens themselves (the LM shifts them) on item text, -100 elsewhere
        assert all(lab in (-100, tok) for lab, tok in zip(written["labels"], written["input_ids"]))
        assert any(lab != -100 for lab in written["labels"])
        assert all(0 <= x < N for x in written["prompt_item_ids"]) and len(written["prompt_item_ids"]) <= p.settings["max_items"]
        assert n <= p.settings["max_length"]


@FEW
@given(st.sampled_from(["all", "causal"]), st.lists(st.one_of(lancer_eval_row, lancer_train_row), min_size=1, max_size=5), st.data())
def test_lancer_last_window_batches_are_invariant_to_row_order(lancer, which, features, data):
    p = lancer[which]

    def offsets(full, alone, i):
        return {k: "left" for k in LEFT_KEYS}

    check_order_invariance(LancerCollator(p, windows="last"), features, data.draw(st.permutations(range(len(features)))),
                           _lancer_fills(p), offsets)


@SOME
@given(st.lists(item, max_size=5), bad_ids, st.integers(0, 5), st.sampled_from(["items", "history", "target"]))
def test_lancer_refuses_an_unknown_or_non_integer_item_id(lancer, good, bad, position, where):
    row = row_with_bad_id(good, bad, position, where)
    with pytest.raises(ValueError, match=r"unknown item id|not an integer catalog id"):
        LancerCollator(lancer["all"])([{"history": [1, 2], "target": 3}, row])


def test_lancer_refuses_empty_and_short_rows_clearly(lancer):
    collate = LancerCollator(lancer["all"])
    with pytest.raises(ValueError, match="empty history in row 1"):
        collate([{"history": [1], "target": 2}, {"history": [], "target": 2}])
    with pytest.raises(ValueError, match="at least two items"):
        collate([{"items": [4], "user": "7"}])


# -- LancerKnowledgeCollator ---------------------------------------------------------------------------

@SOME
@given(st.lists(item, min_size=1, max_size=6), st.integers(1, 5), st.data())
def test_knowledge_batches_hold_each_items_detail_text(lancer, items, slots, data):
    p = lancer["all"]
    features = [{"item": i} for i in items]
    collate = LancerKnowledgeCollator(p, slots)
    batch = collate(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "prompt_item_ids"}
    rows = [p.prefix() + p.format.detail_tokens()[i] for i in items]
    check_padded(batch["input_ids"], rows, p.tokenizer.pad_token_id, side="left")
    check_mask_marks_real_tokens(batch, [len(r) for r in rows], side="left")
    check_padded(batch["labels"], [[-100] * len(p.prefix()) + r[len(p.prefix()):] for r in rows], -100, side="left")
    assert batch["prompt_item_ids"].shape == (len(items), slots) and bool((batch["prompt_item_ids"] == -1).all())
    fills = {"input_ids": p.tokenizer.pad_token_id, "attention_mask": 0, "labels": -100, "prompt_item_ids": -1}
    check_order_invariance(collate, features, data.draw(st.permutations(range(len(items)))), fills,
                           lambda full, alone, i: {k: "left" for k in ("input_ids", "attention_mask", "labels")})


def test_knowledge_collator_refuses_unknown_items(lancer):
    for bad in (-1, N):
        with pytest.raises(ValueError, match=rf"unknown item id {bad}"):
            LancerKnowledgeCollator(lancer["all"], 3)([{"item": 0}, {"item": bad}])


# -- RecSysGLM collators -----------------------------------------------------------------------------

GLM_FILLS = {"attention_mask": 0, "position_ids": 0, "labels": -100, "entity_ids": -1}
features_of_user = st.sampled_from([None, "3", {"age": 30, "occupation": "writer"}])


def check_glm_batch(p, batch, rows):
    """Part A left-padded to the longest Part A, Part B right-padded; every key padded with its fill;
    un-padding a row (by its mask) gives the processor's row back."""
    assert set(batch) == {"input_ids", "attention_mask", "position_ids", "part_a_length", "labels", "entity_ids"}
    assert all(v.dtype == torch.long for v in batch.values())
    width_a = max(r["part_a_length"] for r in rows)
    width = width_a + max(len(r["input_ids"]) - r["part_a_length"] for r in rows)
    b = len(rows)
    assert batch["input_ids"].shape == (b, width) and batch["position_ids"].shape == (b, 2, width)
    assert batch["part_a_length"].tolist() == [width_a] * b
    fills = {"input_ids": p.tokenizer.pad_token_id, **GLM_FILLS}
    for i, r in enumerate(rows):
        off, n = width_a - r["part_a_length"], len(r["input_ids"])
        content = {"input_ids": r["input_ids"], "attention_mask": [1] * n, "position_ids": r["position_ids"],
                   "labels": r["labels"], "entity_ids": r["entity_ids"]}
        for key, fill in fills.items():
            t = batch[key][i]
            assert t[..., off:off + n].tolist() == content[key], (i, key)
            assert bool((torch.cat([t[..., :off], t[..., off + n:]], dim=-1) == fill).all()), (i, key)
        labels = r["labels"]
        a = r["part_a_length"]
        assert labels[:a] == [-100] * a and any(x != -100 for x in labels[a:])  # loss on Part B only
        assert all(0 <= x < len(p.tokenizer) for x in labels if x != -100)


def _glm_offsets(full, alone, i):
    off = int(full["part_a_length"][0]) - int(alone["part_a_length"][0])
    return {k: off for k in ("input_ids", "attention_mask", "position_ids", "labels", "entity_ids")}


glm_eval_row = st.builds(lambda h, t, u: {"history": h, "target": t, "user_features": u}, history, item, features_of_user)
glm_train_row = st.builds(lambda xs, u: {"items": xs, "user": "1", "user_features": u}, train_items, features_of_user)


@SOME
@given(st.lists(st.one_of(glm_eval_row, glm_train_row), min_size=1, max_size=5), st.sampled_from(["last", "random"]),
       st.integers(0, 3), st.data())
def test_recsys_glm_next_item_batches_hold_the_processors_rows(glm, features, targets, seed, data):
    p = glm
    batch = RecSysGLMNextItemCollator(p, targets=targets, seed=seed)(features)
    twin = RecSysGLMNextItemCollator(p, targets=targets, seed=seed)  # the same draws, row by row
    rows = [twin.encode_row(f) for f in features]
    check_glm_batch(p, batch, rows)
    end = p.special_token_ids()["end_token_id"]
    tokens = p.item_tokens()
    for f, r in zip(features, rows):
        a = r["part_a_length"]
        target = f.get("target", f.get("items", [None])[-1] if targets == "last" else None)
        answer = [x for x in r["labels"][a:] if x != -100]
        assert answer[-1] == end and answer[:-1] in tokens  # the target item's tokens, then [END]
        if target is not None:
            assert answer[:-1] == tokens[target]
        if "target" in f:  # an evaluation row is encoded as the processor does for inference
            assert r == p.encode(f["history"], f["target"], user=f["user_features"])
    if targets == "last":
        check_order_invariance(RecSysGLMNextItemCollator(p, targets="last"), features,
                               data.draw(st.permutations(range(len(features)))),
                               {"input_ids": p.tokenizer.pad_token_id, **GLM_FILLS}, _glm_offsets)


def _rebuild_text(p, row) -> tuple[list[int], list[int]]:
    """(tokens, entity ids) of the text a blank-infilling row was cut from: each mask of Part A takes
    its span of Part B back."""
    a, ids, ents = row["part_a_length"], row["input_ids"], row["entity_ids"]
    start = p.special_token_ids()["start_token_id"]
    masks = {v for k, v in p.special_token_ids().items() if k in ("mask_token_id", "smask_token_id", "gmask_token_id")}
    bounds = [j for j in range(a, len(ids)) if ids[j] == start] + [len(ids)]
    spans = list(zip(bounds, bounds[1:]))
    text, entities = [], []
    for j in range(a):
        if ids[j] in masks:
            s, e = spans.pop(0)
            text += ids[s + 1:e]
            entities += ents[s + 1:e]
        else:
            text.append(ids[j])
            entities.append(ents[j])
    assert not spans, "as many masks in Part A as spans in Part B"
    return text, entities


def _is_subsequence(small, big) -> bool:
    it = iter(big)
    return all(x in it for x in small)


@SOME
@given(st.lists(st.one_of(glm_train_row, glm_eval_row), min_size=1, max_size=5), st.integers(0, 3))
def test_recsys_glm_pretraining_rows_blank_out_spans_of_a_window_of_the_users_items(glm, features, seed):
    """Masking never loses or invents content: filling the blanks back gives the text of a behaviour
    window, a subsequence of the user's items (oldest first) of at most max_items."""
    p = glm
    batch = RecSysGLMPretrainCollator(p, seed=seed, objective_per="row")(features)
    twin = RecSysGLMPretrainCollator(p, seed=seed, objective_per="row")  # the same draws, row by row
    rows = [twin.encode_row(f) for f in features]
    check_glm_batch(p, batch, rows)
    item_of_tokens = {tuple(t): i for i, t in enumerate(p.item_tokens())}
    for f, r in zip(features, rows):
        user = f["user_features"]
        if "target" in f:  # an evaluation row is the next-item row
            assert r == p.encode(f["history"], f["target"], user=user)
            continue
        text, entities = _rebuild_text(p, r)
        head = p.format.textualise([], user)
        groups: dict[int, list[int]] = {}
        for t, e in zip(text, entities):
            if e >= len(head.entity_items):  # item entities come after the user's feature values
                groups.setdefault(e, []).append(t)
        window = [item_of_tokens[tuple(groups[e])] for e in sorted(groups)]
        assert 1 <= len(window) <= p.settings["max_items"] and _is_subsequence(window, f["items"])
        assert text == p.format.textualise(window, user).input_ids
        if len(f["items"]) <= p.settings["max_items"]:  # then every behaviour window is the whole (fitted) sequence
            assert window == p.format.fit(f["items"], user)


@FEW
@given(st.lists(glm_train_row, min_size=1, max_size=5), st.integers(0, 3))
def test_recsys_glm_pretraining_draws_one_objective_per_batch(glm, features, seed):
    p = glm
    ids = p.special_token_ids()
    batch = RecSysGLMPretrainCollator(p, seed=seed)(features)
    used = {int(t) for t in batch["input_ids"].flatten()} & {ids["mask_token_id"], ids["smask_token_id"], ids["gmask_token_id"]}
    assert len(used) == 1
    assert bool((batch["labels"] != -100).any(dim=1).all())


@SOME
@given(st.lists(item, max_size=4), st.sampled_from([-1, N, 10**6]), st.integers(0, 4), st.sampled_from(["items", "history", "target"]))
def test_recsys_glm_collators_refuse_unknown_item_ids(glm, good, bad, position, where):
    row = row_with_bad_id(good, bad, position, where)
    # (a random cut drops the items after it unread: "last" reads them all)
    for collate in (RecSysGLMPretrainCollator(glm), RecSysGLMNextItemCollator(glm, targets="last")):
        with pytest.raises(ValueError, match=r"unknown item id"):
            collate([row])


def test_recsys_glm_collators_refuse_empty_and_short_rows_clearly(glm):
    with pytest.raises(ValueError, match="empty training sequence"):
        RecSysGLMPretrainCollator(glm)([{"items": [], "user": "5"}])
    with pytest.raises(ValueError, match="at least two items"):
        RecSysGLMNextItemCollator(glm)([{"items": [3], "user": "5"}])
    with pytest.raises(ValueError, match="empty history"):
        RecSysGLMNextItemCollator(glm)([{"history": [], "target": 3}])


# -- RecSysGLMMultiTaskCollator ------------------------------------------------------------------------

def _task_row(task, items, it=-1, rating=math.nan):
    return {"task": task, "user": "1", "items": items, "item": it, "rating": rating, "review": "", "summary": ""}


task_row = st.one_of(
    st.builds(lambda xs: _task_row("sequential", xs), train_items),
    st.builds(lambda xs: _task_row("direct", xs), st.lists(item, min_size=2, max_size=12)),  # room for negatives
    st.builds(lambda xs, it, r: _task_row("rating", xs, it, r), st.lists(item, max_size=8), item, st.integers(1, 5)),
    glm_eval_row,
)


@FEW
@given(st.lists(task_row, min_size=1, max_size=5), st.integers(0, 3))
def test_recsys_glm_multi_task_batches_hold_seen_template_rows(glm_tasks, features, seed):
    p = glm_tasks
    batch = RecSysGLMMultiTaskCollator(p, seed=seed, choice_negatives=3)(features)
    twin = RecSysGLMMultiTaskCollator(p, seed=seed, choice_negatives=3)
    rows = [twin.encode_row(f) for f in features]
    check_glm_batch(p, {k: batch[k] for k in batch}, [{k: r[k] for k in BATCH_KEYS} for r in rows])
    seen = set(p.template_ids(split="seen"))
    for f, r in zip(features, rows):
        if "task" in f:
            assert r["template_id"] in seen and p.template(r["template_id"])[0] == f["task"]


def test_recsys_glm_multi_task_refuses_bad_rows_clearly(glm_tasks):
    collate = RecSysGLMMultiTaskCollator(glm_tasks, choice_negatives=3)
    with pytest.raises(ValueError, match="unknown item id -1"):
        collate([_task_row("sequential", [1, -1, 3])])
    with pytest.raises(ValueError, match="at least two items"):
        collate([_task_row("direct", [4])])
    with pytest.raises(ValueError, match="out of range"):
        collate([_task_row("rating", [], 3, 9)])
