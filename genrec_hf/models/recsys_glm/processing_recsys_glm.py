"""RecSysGLM's input format and processor (RecSysLLM, "Data Phase" and "Training Phase"): user
behaviour as text, GLM blank-infilling rows with entity-aware masks and 2D positions.

    processor = RecSysGLMProcessor(tokenizer, catalog)      # = SeqRecProcessor(..., method="recsys_glm")
    inputs = processor(histories)          # Part A = history + [MASK], Part B = [START]
    model.set_catalog(processor.item_token_table())
    out = model.recommend(**inputs, top_k=10)

**Text.** A row's text is `[bos] <features.> <instruction> t_1, t_2, ..., t_n`: optional user
features ("key: value; key: value." when a history comes with a dict of user fields, or with a
user id found in the `user_table` setting), the
instruction (plain words), then the item texts (catalog template, "title" by default) joined by
the separator. Items and attribute values are *entities*; plain words (instruction, keys,
separators) are not. Every token carries the index of its entity in the row (`entity_ids`, -1
outside entities). Item texts are tokenized with a leading space, as they appear inside a text
(`item_token_table()` holds the same ids); the separator is written without its trailing
whitespace for that reason (", " -> "," + " title").

**Rows** (one per history; the tensor layout is the model contract):
- `input_ids` = Part A (the corrupted text: each masked span replaced by one mask token) then
  Part B (every span as `[START] s_1 .. s_l`, in chronological order, eq. 1: never permuted).
- `labels`: aligned, not shifted: at a Part B token the next span token, `[END]` after the span's
  last token; -100 in Part A.
- `position_ids` [2, S]: row 0 the inter-position (position in Part A; a span's tokens take their
  mask's), row 1 the intra-position: in Part A 0 for lone tokens and masks, 1..n over an
  entity's n tokens; in Part B `[START]` = 1, the next token 2, then +1 while the token belongs
  to the previous token's entity and 1 again when it does not (paper Figure 1; what the model's
  trie-driven dynamic positions reproduce at generation time). `dynamic_positions=False` is the
  ablation with plain GLM positions: Part A intra 0, Part B 1..l+1 per span.
- A batch left-pads Part A and right-pads Part B, so Part B starts at column `part_a_length`.

**Objectives** (mixed by `objective_ratios`), sampled over *units*, a unit being one whole entity
or one lone token, so no span ever splits an entity; the leading bos is never masked:
- `[MASK]` entity level (GLM's blank infilling): span lengths in units ~ max(1, Poisson(3)),
  drawn until they hold `mask_ratio` (15%) of the units, placed uniformly with at least one
  unmasked unit between spans (GLM's `sample_spans`).
- `[sMASK]` sentence level: whole sentences, drawn in random order until they hold `smask_ratio`
  (15%) of the tokens, one span each. Sentences of this data: the feature block, the
  instruction, and the behaviour sequence cut into groups of `sentence_items` (5) items counted
  from the newest (a separator belongs to the item before it).
- `[gMASK]` document level: one suffix span; its length is drawn uniformly in `gmask_range`
  (50%-100%) of the maskable tokens and rounded up to a whole unit.
- The next-item (fine-tuning) row masks the target item with `[MASK]` at the end of the text:
  the same Part A as the inference row, which has `[START]` alone in Part B.

**Behaviour windows** for pretraining rows (paper: long 10%, medium 30%, short 60%), with
w = `max_items` and n = the length of the user's training sequence (order only, no timestamps):
short = the last w items; medium = w items drawn in order from the most recent `medium_fraction`
(half) of the sequence (at least w items); long = w items drawn in order from the whole
sequence. The three differ in the time they span (the paper's notion); n <= w gives the whole
sequence for all three.

The shared machinery is `processing_base.py` and `catalog.py` (symlinks to `genrec_hf/data/`), so
a saved folder carries the processor's code and loads with `AutoProcessor` as Hub remote code.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from transformers import BatchEncoding

from .processing_base import PAD_VALUES, SeqRecProcessorBase
from .task_prompts import RecSysGLMTasks, TaskPromptWriter, sample_candidates

OBJECTIVES = ("mask", "smask", "gmask")  # entity-, sentence-, document-level
WINDOW_KINDS = ("long", "medium", "short")
# special_token_ids() keys (the model config's names), in the order the tokens are added
SPECIAL_TOKEN_KEYS = ("mask_token_id", "smask_token_id", "gmask_token_id", "start_token_id", "end_token_id")

RECSYS_GLM_DEFAULTS = {
    "max_items": 20,  # history window; ml-100k training sequences have >= 18 items (median ~63)
    "max_item_tokens": 32,  # an item text longer than this is truncated (in text and trie alike)
    "max_length": 512,  # bound on an inference / next-item row (Part A + Part B); see fit()
    "item_template": "title",  # catalog template or format string for an item's text
    "instruction": "A user watched these movies in order:",  # plain words before the items; "" = none
    "separator": ", ",  # between items, plain text (its trailing whitespace comes from the next item)
    "mask_token": "[MASK]",
    "smask_token": "[sMASK]",
    "gmask_token": "[gMASK]",
    "start_token": "[START]",  # GLM's sop (THUDM GLM: "<|startofpiece|>")
    "end_token": "[END]",  # GLM's eop (THUDM GLM: "<|endofpiece|>"), the generation eos
    "dynamic_positions": True,  # False: plain GLM 2D positions (the ablation)
    "objective_ratios": {"mask": 0.6, "smask": 0.2, "gmask": 0.2},  # pretraining mix (paper: none given)
    "mask_ratio": 0.15,  # [MASK]: share of the units masked (GLM: 15%)
    "poisson_lambda": 3.0,  # [MASK]: span length in units ~ Poisson(3) (GLM)
    "smask_ratio": 0.15,  # [sMASK]: share of the tokens covered by whole sentences (GLM: 15%)
    "sentence_items": 5,  # [sMASK]: items per behaviour sentence
    "gmask_range": [0.5, 1.0],  # [gMASK]: the suffix's share of the text (paper: 50%-100%)
    "window_probs": {"long": 0.1, "medium": 0.3, "short": 0.6},  # paper: 10% / 30% / 60%
    "medium_fraction": 0.5,  # medium-term window: drawn from this most recent share of the sequence
    # user id -> {field: value}: a user given by id is written with these features (None: ids add nothing)
    "user_table": None,
    # task prompts (task_prompts.py): None = the templates shipped in task_templates/ (stored once read)
    "task_templates": None,
    "rating_range": [1, 5],  # ratings are whole numbers in this range
    "max_answer_tokens": 48,  # an explanation / summary target is cut to this many tokens
    "max_review_tokens": 128,  # a review shown in a prompt is cut to this many tokens
}


# -- blank infilling on an entity layout (no tokenizer needed) -----------------------------------
def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def entity_units(entity_ids: Sequence[int], start: int = 0) -> list[tuple[int, int]]:
    """Token ranges [s, e) of the maskable units from `start` on: each entity (a run of one entity
    id >= 0) whole, each token outside entities alone."""
    units, i, n = [], start, len(entity_ids)
    while i < n:
        j = i + 1
        if entity_ids[i] >= 0:
            while j < n and entity_ids[j] == entity_ids[i]:
                j += 1
        units.append((i, j))
        i = j
    return units


def sample_entity_spans(units, rng=None, ratio: float = 0.15, poisson_lambda: float = 3.0) -> list[tuple[int, int]]:
    """[MASK] spans (token ranges, chronological): runs of whole units, lengths ~ max(1, Poisson)
    in units until they hold `ratio` of the units, placed uniformly with at least one unmasked
    unit between two spans (GLM's sample_spans, over units instead of tokens)."""
    rng, n = _rng(rng), len(units)
    if n == 0:
        return []
    goal = max(1, round(ratio * n))
    lengths: list[int] = []
    while sum(lengths) < goal:
        lengths.append(max(1, int(rng.poisson(poisson_lambda))))
    while sum(lengths) + len(lengths) - 1 > n:  # too long for the text: trim the last draw
        excess = sum(lengths) + len(lengths) - 1 - n
        if lengths[-1] > excess:
            lengths[-1] -= excess
        else:
            lengths.pop()
    lengths = [int(x) for x in rng.permutation(lengths)]
    slack = n - sum(lengths) - (len(lengths) - 1)
    places = sorted(int(x) for x in rng.integers(0, slack + 1, size=len(lengths)))
    spans, offset = [], 0
    for place, length in zip(places, lengths):
        first = offset + place
        spans.append((units[first][0], units[first + length - 1][1]))
        offset += length + 1
    return spans


def sentence_ranges(units, sentence_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Token ranges of the sentences: consecutive units with the same sentence id."""
    ranges: list[list[int]] = []
    last = None
    for s, e in units:
        if ranges and sentence_ids[s] == last:
            ranges[-1][1] = e
        else:
            ranges.append([s, e])
            last = sentence_ids[s]
    return [(s, e) for s, e in ranges]


def sample_sentence_spans(sentences, rng=None, ratio: float = 0.15) -> list[tuple[int, int]]:
    """[sMASK] spans: whole sentences in random order until they cover `ratio` of the tokens
    (at least one), returned in chronological order, one span per sentence."""
    rng = _rng(rng)
    if not sentences:
        return []
    total = sum(e - s for s, e in sentences)
    chosen, covered = [], 0
    for index in rng.permutation(len(sentences)):
        chosen.append(sentences[int(index)])
        covered += chosen[-1][1] - chosen[-1][0]
        if covered >= ratio * total:
            break
    return sorted(chosen)


def sample_document_span(units, rng=None, low: float = 0.5, high: float = 1.0) -> list[tuple[int, int]]:
    """[gMASK]: one suffix span of at least U(low, high) of the tokens, grown to a unit boundary."""
    rng = _rng(rng)
    if not units:
        return []
    start, end = units[0][0], units[-1][1]
    goal = rng.uniform(low, high) * (end - start)
    first = len(units) - 1
    while first > 0 and end - units[first][0] < goal:
        first -= 1
    return [(units[first][0], end)]


def build_infilling_row(
    input_ids: Sequence[int],
    entity_ids: Sequence[int],
    spans: Sequence[tuple[int, int, int]],
    start_token_id: int,
    end_token_id: int,
    dynamic_positions: bool = True,
) -> dict:
    """One blank-infilling row (unpadded lists) from a text and its masked spans.

    input_ids, entity_ids: the text and the entity index of each token (-1 outside entities).
    spans: (start, end, mask_token_id) token ranges, chronological and non-overlapping; an empty
        range (start == end) inserts a blank whose Part B is `[START]` alone (inference).
    Returns input_ids (Part A then Part B), position_ids [[inter...], [intra...]], labels
    (aligned: next span token, `[END]` after a span), entity_ids and part_a_length.
    Raises ValueError for a span that splits an entity or spans out of order.
    """
    n = len(input_ids)
    if len(entity_ids) != n:
        raise ValueError(f"{len(entity_ids)} entity ids for {n} tokens")

    def splits(b: int) -> bool:
        return 0 < b < n and entity_ids[b - 1] >= 0 and entity_ids[b - 1] == entity_ids[b]

    cursor = 0
    for s, e, _ in spans:
        if not cursor <= s <= e <= n:
            raise ValueError(f"spans must be chronological, non-overlapping and inside the text of {n} tokens: {list(spans)}")
        for b in (s, e):
            if splits(b):
                raise ValueError(f"span [{s}, {e}) splits entity {entity_ids[b]}: an entity is masked whole or not at all")
        cursor = e

    ids_a: list[int] = []
    ent_a: list[int] = []
    intra_a: list[int] = []

    def put(token: int, entity: int) -> None:
        intra = 0
        if dynamic_positions and entity >= 0:
            intra = intra_a[-1] + 1 if ent_a and ent_a[-1] == entity else 1
        ids_a.append(int(token))
        ent_a.append(int(entity))
        intra_a.append(intra)

    mask_at, cursor = [], 0
    for s, e, mask_id in spans:
        for j in range(cursor, s):
            put(input_ids[j], entity_ids[j])
        mask_at.append(len(ids_a))
        put(mask_id, -1)
        cursor = e
    for j in range(cursor, n):
        put(input_ids[j], entity_ids[j])

    ids_b, ent_b, inter_b, intra_b, labels_b = [], [], [], [], []
    for (s, e, _), position in zip(spans, mask_at):
        tokens = [int(t) for t in input_ids[s:e]]
        ids_b += [int(start_token_id)] + tokens
        labels_b += tokens + [int(end_token_id)]
        ent_b += [-1] + [int(x) for x in entity_ids[s:e]]
        inter_b += [position] * (e - s + 1)
        intra = [1]
        for k in range(s, e):
            same = entity_ids[k] >= 0 and entity_ids[k] == entity_ids[k - 1]
            intra.append(intra[-1] + 1 if k == s or not dynamic_positions or same else 1)
        intra_b += intra
    return {
        "input_ids": ids_a + ids_b,
        "position_ids": [list(range(len(ids_a))) + inter_b, intra_a + intra_b],
        "labels": [-100] * len(ids_a) + labels_b,
        "entity_ids": ent_a + ent_b,
        "part_a_length": len(ids_a),
    }


class Textualised(NamedTuple):
    """A row's text: tokens, the entity index of each token (-1 outside entities), the sentence
    index of each token (-1 for the never-masked prefix) and the catalog item of each entity
    (-1 for attribute values)."""

    input_ids: list[int]
    entity_ids: list[int]
    sentence_ids: list[int]
    entity_items: list[int]

    @property
    def fixed(self) -> int:
        """Leading tokens that are never masked (the tokenizer's bos)."""
        return next((i for i, s in enumerate(self.sentence_ids) if s >= 0), len(self.sentence_ids))


def _check_probs(name: str, probs, keys: Sequence[str]) -> dict:
    if not isinstance(probs, Mapping):
        raise ValueError(f"{name} must be a dict over {list(keys)}, got {probs!r}")
    unknown = set(probs) - set(keys)
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {sorted(unknown)}; use {list(keys)}")
    out = {k: float(probs.get(k, 0.0)) for k in keys}
    if any(not 0.0 <= v <= 1.0 for v in out.values()) or abs(sum(out.values()) - 1.0) > 1e-6:
        raise ValueError(f"{name} must be probabilities in [0, 1] that sum to 1, got {dict(probs)}")
    return out


def _add_special_tokens(tokenizer, tokens: Sequence[str]) -> list[int]:
    """Ids of `tokens`, adding the missing ones (in order) as extra special tokens."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        try:  # transformers 5: kept with the tokenizer's special tokens, skipped by decode
            tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        except (TypeError, ValueError, KeyError, AttributeError):
            tokenizer.add_tokens(missing, special_tokens=True)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"the tokenizer cannot give the special tokens {list(tokens)} distinct ids (got {ids})")
    return ids


class RecSysGLMFormat:
    """`[bos] <features.> <instruction> t_1, ..., t_n` with entity ids, written as GLM
    blank-infilling rows (module docstring). Settings: RECSYS_GLM_DEFAULTS."""

    defaults = RECSYS_GLM_DEFAULTS
    # what __call__ returns (labels only with targets); the training collators take entity_ids too
    output_keys = ("input_ids", "position_ids", "part_a_length", "history_item_ids", "labels")

    def __init__(self, processor: "RecSysGLMProcessor"):
        self.p = processor
        s = processor.settings
        if int(s["max_items"]) < 1 or int(s["max_item_tokens"]) < 1 or int(s["sentence_items"]) < 1:
            raise ValueError("max_items, max_item_tokens and sentence_items must be >= 1")
        s["objective_ratios"] = _check_probs("objective_ratios", s["objective_ratios"], OBJECTIVES)
        s["window_probs"] = _check_probs("window_probs", s["window_probs"], WINDOW_KINDS)
        low, high = (float(x) for x in s["gmask_range"])
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"gmask_range must be [low, high] with 0 < low <= high <= 1, got {s['gmask_range']}")
        s["gmask_range"] = [low, high]
        for key in ("mask_ratio", "smask_ratio", "medium_fraction"):
            if not 0.0 < float(s[key]) <= 1.0:
                raise ValueError(f"{key} must be in (0, 1], got {s[key]}")
        if float(s["poisson_lambda"]) <= 0:
            raise ValueError(f"poisson_lambda must be > 0, got {s['poisson_lambda']}")
        names = [s[k.replace("_id", "")] for k in SPECIAL_TOKEN_KEYS]
        if len(set(names)) != len(names):
            raise ValueError(f"the five special tokens must differ, got {names}")
        self.special_ids = dict(zip(SPECIAL_TOKEN_KEYS, _add_special_tokens(processor.tokenizer, names)))
        self.mask_ids = {
            "mask": self.special_ids["mask_token_id"],
            "smask": self.special_ids["smask_token_id"],
            "gmask": self.special_ids["gmask_token_id"],
        }
        self._plain_cache: dict[str, list[int]] = {}
        self._value_cache: dict[str, list[int]] = {}
        self.separator_ids = self._plain(s["separator"].rstrip())
        self.tasks = TaskPromptWriter(self, build_infilling_row)

    # -- tokens ---------------------------------------------------------------------------------
    def _plain(self, text: str) -> list[int]:
        """Plain words as written (no added space), never read as special tokens."""
        if not text:
            return []
        if text not in self._plain_cache:
            self._plain_cache[text] = self.p.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return self._plain_cache[text]

    def _value(self, text: str) -> list[int]:
        """An attribute value as an entity inside a text (leading space, like item texts)."""
        if text not in self._value_cache:
            self._value_cache[text] = self.p.tokenize([text], self.p.settings["max_item_tokens"])[0]
        return self._value_cache[text]

    def item_texts(self) -> list[str]:
        return self.p.catalog.with_template(self.p.settings["item_template"]).texts()

    def longest_item(self) -> int:
        if not hasattr(self, "_longest"):
            self._longest = max(len(t) for t in self.p.item_tokens())
        return self._longest

    def item_cost(self, item: int) -> int:
        return len(self.p.item_tokens()[item]) + len(self.separator_ids)

    def fixed_cost(self, head: int | None = None) -> int:
        """Tokens of a next-item row besides the history items: the head (bos, features,
        instruction), [MASK], [START] and the longest item (the target or what is generated)."""
        if head is None:
            head = len(self.textualise([]).input_ids)
        return head + 2 + self.longest_item()

    def fit(self, history: Sequence[int], user=None) -> list[int]:
        """The newest whole items of `history` that fit `max_items` and `max_length` (a next-item row
        of them fits max_length; a pretraining row of them is longer by 2 tokens per span beyond one)."""
        s = self.p.settings
        window = [int(i) for i in history[-int(s["max_items"]):]]
        if s["max_length"] is None:
            return window
        used, kept = self.fixed_cost(len(self.textualise([], user).input_ids)), 0
        for item in reversed(window):
            used += self.item_cost(item)
            if used > s["max_length"]:
                break
            kept += 1
        if kept == 0:
            raise ValueError(f"max_length={s['max_length']} cannot hold even the newest item")
        return window[len(window) - kept:]

    # -- text -----------------------------------------------------------------------------------
    def textualise(self, window: Sequence[int], user=None) -> Textualised:
        """The row text of `window` (catalog ids, oldest first) and, when `user` is a dict of
        features, its fields as "key: value; key: value." (each value an entity; list values are
        several entities). Other `user` values (an id string, None) add nothing."""
        s = self.p.settings
        ids = list(self.p.prefix())
        ent = [-1] * len(ids)
        sent = [-1] * len(ids)
        items: list[int] = []
        sentence = 0

        def add(tokens: list[int], entity: int = -1) -> None:
            ids.extend(tokens)
            ent.extend([entity] * len(tokens))
            sent.extend([sentence] * len(tokens))

        def add_entity(tokens: list[int], item: int) -> None:
            add(tokens, len(items))
            items.append(item)

        written = False  # whether plain words need a leading space
        if user is not None and not isinstance(user, Mapping) and s["user_table"]:
            user = s["user_table"].get(str(user))  # an id of the table's: its features (else nothing)
        if isinstance(user, Mapping):
            fields = [(str(k), v) for k, v in user.items() if v is not None and v != "" and v != []]
            for f, (key, value) in enumerate(fields):
                add(self._plain((" " if written else "") + f"{key}:"))
                written = True
                values = value if isinstance(value, (list, tuple)) else [value]
                for v, one in enumerate(values):
                    if v:
                        add(self._plain(","))
                    add_entity(self._value(str(one)), -1)
                add(self._plain(";" if f < len(fields) - 1 else "."))
            if fields:
                sentence += 1
        if s["instruction"]:
            add(self._plain((" " if written else "") + s["instruction"]))
            sentence += 1
        size = int(s["sentence_items"])
        groups = math.ceil(len(window) / size)
        tokens = self.p.item_tokens()
        base = sentence
        for i, item in enumerate(window):
            if i:
                add(self.separator_ids)  # still in the previous item's sentence
            sentence = base + groups - 1 - (len(window) - 1 - i) // size
            add_entity(tokens[int(item)], int(item))
        return Textualised(ids, ent, sent, items)

    # -- rows -----------------------------------------------------------------------------------
    def _check(self, history, target=None) -> None:
        self.p.check_histories([list(history)])
        if target is not None:
            self.p.check_histories([[target]])

    def encode(self, history, target=None, user=None, mask_position=None) -> dict:
        """The next-item row: Part A = the history's text + separator + [MASK]; Part B = [START]
        (inference) or [START] + the target's tokens, labelled with them and [END]."""
        if mask_position is not None:
            raise ValueError("mask_position is not a RecSysGLM input: use encode_infilling for pretraining rows")
        history = [int(i) for i in history]
        self._check(history, target)
        window = self.fit(history, user)
        mask = self.mask_ids["mask"]
        start, end = self.special_ids["start_token_id"], self.special_ids["end_token_id"]
        dynamic = bool(self.p.settings["dynamic_positions"])
        if target is None:
            text = self.textualise(window, user)
            ids = text.input_ids + self.separator_ids
            ents = text.entity_ids + [-1] * len(self.separator_ids)
            row = build_infilling_row(ids, ents, [(len(ids), len(ids), mask)], start, end, dynamic)
            row["labels"] = [-100] * len(row["input_ids"])
        else:
            text = self.textualise(window + [int(target)], user)
            first = len(text.input_ids) - len(self.p.item_tokens()[int(target)])
            row = build_infilling_row(text.input_ids, text.entity_ids, [(first, len(text.input_ids), mask)], start, end, dynamic)
        row["history_item_ids"] = list(history)
        return row

    def spans(self, text: Textualised, objective: str, rng=None) -> list[tuple[int, int, int]]:
        """Masked spans (start, end, mask token id) of one objective over a text."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}: use one of {OBJECTIVES}")
        s, rng = self.p.settings, _rng(rng)
        units = entity_units(text.entity_ids, text.fixed)
        if objective == "mask":
            chosen = sample_entity_spans(units, rng, float(s["mask_ratio"]), float(s["poisson_lambda"]))
        elif objective == "smask":
            chosen = sample_sentence_spans(sentence_ranges(units, text.sentence_ids), rng, float(s["smask_ratio"]))
        else:
            chosen = sample_document_span(units, rng, *s["gmask_range"])
        return [(a, b, self.mask_ids[objective]) for a, b in chosen]

    def encode_infilling(self, history, objective: str = "mask", rng=None, user=None) -> dict:
        """A pretraining row: the text of the newest items of `history` (max_items, max_length)
        with spans of one objective blanked out."""
        history = [int(i) for i in history]
        self._check(history)
        text = self.textualise(self.fit(history, user), user)
        row = build_infilling_row(
            text.input_ids, text.entity_ids, self.spans(text, objective, rng),
            self.special_ids["start_token_id"], self.special_ids["end_token_id"], bool(self.p.settings["dynamic_positions"]),
        )
        row["history_item_ids"] = list(history)
        row["objective"] = objective
        return row

    def draw_objective(self, rng=None) -> str:
        ratios = self.p.settings["objective_ratios"]
        return str(_rng(rng).choice(OBJECTIVES, p=[ratios[k] for k in OBJECTIVES]))

    def sample_behaviour(self, items: Sequence[int], rng=None) -> tuple[str, list[int]]:
        """(kind, window): a long-, medium- or short-term window of a training sequence, drawn
        with `window_probs` (module docstring for the definitions)."""
        rng, s = _rng(rng), self.p.settings
        probs = s["window_probs"]
        kind = str(rng.choice(WINDOW_KINDS, p=[probs[k] for k in WINDOW_KINDS]))
        items, w = [int(i) for i in items], int(s["max_items"])
        if len(items) <= w or kind == "short":
            return kind, items[-w:]
        pool = items if kind == "long" else items[-max(w, math.ceil(float(s["medium_fraction"]) * len(items))):]
        keep = np.sort(rng.choice(len(pool), size=w, replace=False))
        return kind, [pool[int(i)] for i in keep]

    def encode_pretraining(self, items, rng=None, user=None, objective: str | None = None) -> dict:
        """A pretraining row: a behaviour window of `items`, then `objective` (None: one drawn by
        `objective_ratios`). The row also names them (`behaviour`, `objective`)."""
        rng = _rng(rng)
        self._check([int(i) for i in items])
        kind, window = self.sample_behaviour(items, rng)
        row = self.encode_infilling(window, objective or self.draw_objective(rng), rng, user=user)
        row["behaviour"] = kind
        return row


class RecSysGLMProcessor(SeqRecProcessorBase):
    """Tokenizer + item catalog -> RecSysGLM rows (the model contract): input_ids, attention_mask,
    position_ids [B, 2, S], part_a_length [B], history_item_ids, labels (with targets).

    `processor(histories, targets=None, users=None)`: next-item rows (inference: Part B = [START];
    with targets: the fine-tuning rows). A user given as a dict of fields (`{"age": 25,
    "occupation": "writer"}`) is written before the instruction, each value an entity; a user id
    string adds nothing unless the `user_table` setting ({user id: {field: value}}) holds it: then
    its features are written, so evaluation, which passes user ids, sees them too. The loaders read
    ml-100k's `.user` table into `SequenceData.user_features`; the recipe's `user_features` (CLI
    `--user-features age,gender,occupation`) puts the chosen fields into `user_table`. Pretraining rows:
    `encode_pretraining` / `encode_infilling` (lists, one row; `pad` makes a batch), as the
    collators in `genrec_hf.training.recsys_glm` use them.
    """

    method = "recsys_glm"
    format_class = RecSysGLMFormat

    def special_token_ids(self) -> dict[str, int]:
        """{mask_token_id, smask_token_id, gmask_token_id, start_token_id, end_token_id}."""
        return dict(self.format.special_ids)

    def item_token_table(self) -> torch.LongTensor:
        """[num_items, width] each item's tokens as written inside a text (leading space), -1
        padded: the entity pool / trie of dynamic positions and constrained decoding."""
        rows = self.item_tokens()
        width = max(len(r) for r in rows)
        return torch.tensor([list(r) + [-1] * (width - len(r)) for r in rows], dtype=torch.long)

    def textualise(self, history: Sequence[int], user=None) -> Textualised:
        """The text of the newest items of `history` with its entity and sentence layout."""
        return self.format.textualise(self.format.fit([int(i) for i in history], user), user)

    def encode_infilling(self, history, objective: str = "mask", rng=None, user=None) -> dict:
        return self.format.encode_infilling(history, objective, rng, user=user)

    def encode_pretraining(self, items, rng=None, user=None, objective: str | None = None) -> dict:
        return self.format.encode_pretraining(items, rng, user=user, objective=objective)

    def draw_objective(self, rng=None) -> str:
        """One of OBJECTIVES, drawn by `objective_ratios`."""
        return self.format.draw_objective(rng)

    def sample_behaviour(self, items, rng=None) -> tuple[str, list[int]]:
        return self.format.sample_behaviour(items, rng)

    # -- task prompts (task_prompts.py) ------------------------------------------------------------
    def template_ids(self, family: str | None = None, split: str | None = None, answer: str | None = None) -> list[str]:
        """Template ids, optionally of one family, split ("seen" / "held_out") and answer kind."""
        return self.format.tasks.template_ids(family, split, answer)

    def template(self, template_id: str) -> tuple[str, dict]:
        """(family, template) of a template id; ValueError naming the known ids otherwise."""
        return self.format.tasks.template(template_id)

    def encode_task(self, template_id: str, user=None, history=(), item=None, candidates=None, review=None,
                    feature=None, answer=None) -> dict:
        """One task row (lists) of a template: Part A = the prompt with [MASK] at {answer}, Part B =
        [START] (+ the answer, labelled, when `answer` is given). Bad input (unknown template or
        item id, a rating out of range, an empty review, a missing field) raises ValueError."""
        return self.format.tasks.encode(template_id, user, history, item, candidates, review, feature, answer)

    def task_batch(self, rows: Sequence[dict], return_tensors: str | None = "pt") -> BatchEncoding:
        """encode_task rows -> a padded batch of the model contract (+ history_item_ids)."""
        keys = ("input_ids", "position_ids", "part_a_length", "labels", "entity_ids", "history_item_ids")
        return self.pad({k: [r[k] for r in rows] for k in keys}, return_tensors=return_tensors)

    def task_runner(self, model, batch_size: int = 32) -> RecSysGLMTasks:
        """Task-typed calls (predict_rating, rank_candidates, recommend, explain, summarize) over
        `model` and this processor; reachable from a remote-code processor as well."""
        return RecSysGLMTasks(model, self, batch_size)

    def sample_candidates(self, target: int, history, num_negatives: int = 99, rng=None) -> list[int]:
        """The target and `num_negatives` seeded negatives the user never interacted with, shuffled."""
        return sample_candidates(target, history, self.num_items, num_negatives, rng)

    def pad(self, data: dict, return_tensors: str | None = "pt") -> BatchEncoding:
        """Rows (lists) -> a batch: Part A left-padded to the longest Part A, Part B right-padded;
        part_a_length becomes that common width; position_ids [B, 2, S] padded with 0, labels
        with -100, entity_ids and item-id keys with -1."""
        ids, lengths = data["input_ids"], [int(a) for a in data["part_a_length"]]
        width_a = max(lengths)
        width_b = max(len(r) - a for r, a in zip(ids, lengths))

        def place(row, a: int, fill) -> list:
            return [fill] * (width_a - a) + list(row[:a]) + list(row[a:]) + [fill] * (width_b - (len(row) - a))

        pad = self.tokenizer.pad_token_id
        out = {
            "input_ids": [place(r, a, pad) for r, a in zip(ids, lengths)],
            "attention_mask": [place([1] * len(r), a, 0) for r, a in zip(ids, lengths)],
            "part_a_length": [width_a] * len(ids),
        }
        for key, rows in data.items():
            if key in out:
                continue
            if key == "position_ids":
                out[key] = [[place(axis, a, 0) for axis in r] for r, a in zip(rows, lengths)]
            elif key in ("labels", "entity_ids"):
                out[key] = [place(r, a, -100 if key == "labels" else -1) for r, a in zip(rows, lengths)]
            else:
                w = max(1, max(len(r) for r in rows))
                out[key] = [list(r) + [PAD_VALUES.get(key, -1)] * (w - len(r)) for r in rows]
        return BatchEncoding(out, tensor_type=return_tensors)


RecSysGLMProcessor.register_for_auto_class()

__all__ = [
    "OBJECTIVES", "RECSYS_GLM_DEFAULTS", "SPECIAL_TOKEN_KEYS", "WINDOW_KINDS", "RecSysGLMFormat", "RecSysGLMProcessor",
    "Textualised", "build_infilling_row", "entity_units", "sample_document_span", "sample_entity_spans",
    "sample_sentence_spans", "sentence_ranges",
]
