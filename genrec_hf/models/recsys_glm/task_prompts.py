"""RecSysGLM's task prompts (RecSysLLM, "Experiments"): one model for five P5-style task
families, each a set of templates with ids, split into seen templates (training) and held-out
ones (zero-shot evaluation).

A template is text with placeholders; the answer is the blank the model infills:
- `{user}`: "user_<id>", an entity; `{item}`: an item's text, an entity; `{history}` and
  `{candidates}`: item texts joined by the separator, each an entity (the newest `max_items` of a
  history); `{feature}`: a feature word, an entity; `{review}`: the review, plain words (at most
  `max_review_tokens`); `{answer}`: the blank, exactly once.
- The answer by family: `rating` the rating as a number ("4"); `sequential` an item (decoded on
  the catalog trie); `direct` "yes" / "no" (templates with `"answer": "yes_no"`) or one of the
  candidates (`"answer": "choice"`); `explanation` and `summary` free text (at most
  `max_answer_tokens`).
- A text answer is one span whose intra-positions run 1..n+1 (GLM's plain rule, which is what
  generation uses for it); an item answer keeps the entity's dynamic positions.

Templates live in data (`task_templates/<family>.json` beside this file); a processor stores the
ones it uses in its settings, so a saved checkpoint carries them (Hub remote code needs no file).
Self-contained: numpy, torch and the same folder's processing module.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Mapping, Sequence

import numpy as np
import torch

FAMILIES = ("rating", "sequential", "direct", "explanation", "summary")
SPLITS = ("seen", "held_out")
ANSWER_KINDS = {"rating": ("rating",), "sequential": ("item",), "direct": ("yes_no", "choice"),
                "explanation": ("text",), "summary": ("text",)}
PLACEHOLDERS = ("user", "item", "history", "candidates", "feature", "review", "answer")
YES_NO = ("yes", "no")
_FIELD = re.compile(r"\{([a-z_]+)\}")


def default_templates() -> dict[str, list[dict]]:
    """The templates shipped in `task_templates/`: {family: [template, ...]}."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "task_templates")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"no task templates at {folder}: pass task_templates= to the processor (a saved processor carries its own)"
        )
    out = {}
    for family in FAMILIES:
        with open(os.path.join(folder, f"{family}.json"), encoding="utf-8") as f:
            out[family] = json.load(f)["templates"]
    return out


def check_templates(templates: Mapping[str, Sequence[Mapping]]) -> dict[str, list[dict]]:
    """Validated copies: known families, unique ids, a known split, known placeholders, `{answer}`
    exactly once, the answer kind the family allows (default: the family's first), the fields
    each kind needs, and at least one seen template per family."""
    if not isinstance(templates, Mapping):
        raise ValueError(f"task_templates must be a dict {{family: [template, ...]}}, got {type(templates).__name__}")
    unknown = set(templates) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown task famil(ies) {sorted(unknown)}; known: {list(FAMILIES)}")
    out, ids = {}, set()
    for family, rows in templates.items():
        out[family] = []
        for t in rows:
            tid = t.get("id")
            if not tid or tid in ids:
                raise ValueError(f"{family}: every template needs a unique id, got {tid!r}")
            ids.add(tid)
            if t.get("split") not in SPLITS:
                raise ValueError(f"template {tid}: split must be one of {SPLITS}, got {t.get('split')!r}")
            prompt = str(t.get("prompt", ""))
            fields = _FIELD.findall(prompt)
            bad = sorted(set(fields) - set(PLACEHOLDERS))
            if bad:
                raise ValueError(f"template {tid}: unknown placeholder(s) {bad}; known: {list(PLACEHOLDERS)}")
            if fields.count("answer") != 1:
                raise ValueError(f"template {tid}: the prompt must hold {{answer}} exactly once")
            kind = t.get("answer", ANSWER_KINDS[family][0])
            if kind not in ANSWER_KINDS[family]:
                raise ValueError(f"template {tid}: a {family} answer is one of {ANSWER_KINDS[family]}, got {kind!r}")
            if kind == "choice" and "candidates" not in fields:
                raise ValueError(f"template {tid}: a choice template lists {{candidates}}")
            if kind == "yes_no" and "item" not in fields:
                raise ValueError(f"template {tid}: a yes_no template names the {{item}} it asks about")
            if family == "summary" and "review" not in fields:
                raise ValueError(f"template {tid}: a summary template shows the {{review}}")
            out[family].append({**t, "answer": kind, "prompt": prompt})
        if not any(t["split"] == "seen" for t in out[family]):
            raise ValueError(f"{family}: at least one template must be seen in training")
    return out


def sample_candidates(target: int, history: Sequence[int], num_items: int, num_negatives: int = 99,
                      rng=None) -> list[int]:
    """The direct task's candidates: the target and `num_negatives` items drawn uniformly without
    replacement among the items the user has not interacted with (never the target, never the
    history), shuffled. Seeded by `rng` (a Generator or a seed)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    seen = {int(i) for i in history} | {int(target)}
    pool = num_items - len(seen)
    if not 0 <= int(target) < num_items:
        raise ValueError(f"unknown target item id {target}: the catalog has ids 0..{num_items - 1}")
    if num_negatives > pool:
        raise ValueError(f"{num_negatives} negatives asked for, but only {pool} items are new to this user")
    negatives: list[int] = []
    chosen: set[int] = set()
    while len(negatives) < num_negatives:  # rejection sampling: the history is small next to the catalog
        for i in rng.integers(0, num_items, size=2 * (num_negatives - len(negatives)) + 8):
            i = int(i)
            if i not in seen and i not in chosen:
                chosen.add(i)
                negatives.append(i)
                if len(negatives) == num_negatives:
                    break
    out = np.array([int(target)] + negatives)
    return [int(i) for i in out[rng.permutation(len(out))]]


class TaskPromptWriter:
    """Task rows (the infilling contract of `build_infilling_row`) from a RecSysGLMFormat."""

    def __init__(self, fmt, build_infilling_row):
        self.f, self.p = fmt, fmt.p
        self.build = build_infilling_row
        s = self.p.settings
        s["task_templates"] = check_templates(s["task_templates"] if s.get("task_templates") is not None else default_templates())
        low, high = (float(x) for x in s["rating_range"])
        if not low < high:
            raise ValueError(f"rating_range must be [low, high] with low < high, got {s['rating_range']}")
        self.by_id = {t["id"]: (family, t) for family, rows in s["task_templates"].items() for t in rows}

    # -- templates --------------------------------------------------------------------------------
    def template(self, template_id: str) -> tuple[str, dict]:
        if template_id not in self.by_id:
            raise ValueError(f"unknown template id {template_id!r}; known: {sorted(self.by_id)}")
        return self.by_id[template_id]

    def template_ids(self, family: str | None = None, split: str | None = None, answer: str | None = None) -> list[str]:
        if family is not None and family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}; known: {list(FAMILIES)}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [tid for tid, (fam, t) in self.by_id.items()
                if (family is None or fam == family) and (split is None or t["split"] == split)
                and (answer is None or t["answer"] == answer)]

    # -- answers ----------------------------------------------------------------------------------
    def rating_values(self) -> list[int]:
        low, high = (float(x) for x in self.p.settings["rating_range"])
        return list(range(math.ceil(low), math.floor(high) + 1))

    def answer_tokens(self, kind: str, answer, candidates=None) -> tuple[list[int], bool]:
        """(tokens, is_item) of an answer as written after the blank (leading space)."""
        if kind in ("item", "choice"):
            item = int(answer)
            self.p.check_histories([[item]])
            if kind == "choice" and item not in [int(c) for c in candidates]:
                raise ValueError(f"the answer item {item} is not among the candidates")
            return list(self.p.item_tokens()[item]), True
        if kind == "rating":
            value = float(answer)
            low, high = (float(x) for x in self.p.settings["rating_range"])
            if not low <= value <= high or value != round(value):
                raise ValueError(f"rating {answer!r} is out of range: ratings are whole numbers in [{low:g}, {high:g}]")
            text = f"{int(value)}"
        elif kind == "yes_no":
            if isinstance(answer, str):
                if answer.strip().lower() not in YES_NO:
                    raise ValueError(f"a yes_no answer is 'yes', 'no' or a bool, got {answer!r}")
                text = answer.strip().lower()
            else:
                text = YES_NO[0] if bool(answer) else YES_NO[1]
        else:
            text = " ".join(str(answer or "").split())
            if not text:
                raise ValueError("empty answer text: an explanation or summary target needs words")
        tokens = self.f._plain(" " + text)[: int(self.p.settings["max_answer_tokens"])]
        return tokens, False

    # -- rows -------------------------------------------------------------------------------------
    def encode(self, template_id: str, user=None, history=(), item=None, candidates=None, review=None,
               feature=None, answer=None) -> dict:
        """One task row: Part A = the template's text with `[MASK]` at `{answer}`; Part B = `[START]`
        (inference, answer=None) or `[START]` + the answer's tokens, labelled with them and `[END]`."""
        family, t = self.template(template_id)
        prompt, kind = t["prompt"], t["answer"]
        fields = set(_FIELD.findall(prompt))
        history = [int(i) for i in history or []]
        needs = {"user": user, "item": item, "candidates": candidates, "review": review, "feature": feature}
        for name, value in needs.items():
            if name in fields and (value is None or (name != "user" and isinstance(value, (list, tuple)) and not value)):
                raise ValueError(f"template {template_id} needs {name}=")
        if "history" in fields:
            if not history:
                raise ValueError(f"template {template_id} needs a non-empty history")
            self.p.check_histories([history])
        if item is not None:
            self.p.check_histories([[int(item)]])
        if candidates is not None:
            candidates = [int(c) for c in candidates]
            self.p.check_histories([candidates])
        if "review" in fields and not " ".join(str(review).split()):
            raise ValueError(f"template {template_id}: empty review text")
        answer_row = None
        if answer is not None:
            answer_row = self.answer_tokens(kind, answer, candidates)
        window = self.f.fit(history) if "history" in fields else []
        s = self.p.settings
        while True:
            ids, ents, span = self._text(prompt, user, window, item, candidates, review, feature, answer_row)
            extra = 2 + (0 if answer_row is not None else self.f.longest_item() if kind in ("item", "choice")
                         else int(s["max_answer_tokens"]))
            if s["max_length"] is None or len(ids) + extra <= int(s["max_length"]) or len(window) <= 1:
                break
            window = window[1:]  # drop the oldest history item until the row fits
        if s["max_length"] is not None and len(ids) + 2 > int(s["max_length"]):
            raise ValueError(f"template {template_id}: the row needs {len(ids) + 2} tokens, more than max_length={s['max_length']}")
        start, end = self.f.special_ids["start_token_id"], self.f.special_ids["end_token_id"]
        row = self.build(ids, ents, [(span[0], span[1], self.f.mask_ids["mask"])], start, end,
                         bool(s["dynamic_positions"]))
        if answer is None:
            row["labels"] = [-100] * len(row["input_ids"])
        row["history_item_ids"] = list(history)
        row["task"] = family
        row["template_id"] = template_id
        return row

    def _text(self, prompt, user, window, item, candidates, review, feature, answer_row):
        ids, ents = list(self.p.prefix()), [-1] * len(self.p.prefix())
        count = [0]

        def add(tokens, entity: bool) -> None:
            ids.extend(tokens)
            ents.extend([count[0] if entity else -1] * len(tokens))
            count[0] += int(entity)

        def add_items(items) -> None:
            for k, i in enumerate(items):
                if k:
                    add(self.f.separator_ids, False)
                add(self.p.item_tokens()[int(i)], True)

        span = None
        pieces = _FIELD.split(prompt)  # literal, field, literal, field, ...
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                text = piece if len(ids) > len(self.p.prefix()) else piece.lstrip()
                if text.strip():
                    # whitespace before a field comes from the field's leading space (as for items)
                    add(self.f._plain(text.rstrip(" ") if k + 1 < len(pieces) else text.rstrip()), False)
                continue
            if piece == "user":
                add(self.f._value(f"user_{user}"), True)
            elif piece == "item":
                add(self.p.item_tokens()[int(item)], True)
            elif piece == "history":
                add_items(window)
            elif piece == "candidates":
                add_items(candidates)
            elif piece == "feature":
                add(self.f._value(str(feature)), True)
            elif piece == "review":
                words = self.f._plain(" " + " ".join(str(review).split()))
                add(words[: int(self.p.settings["max_review_tokens"])], False)
            else:  # the blank: the answer's tokens (one entity), or an empty span at inference
                first = len(ids)
                if answer_row is not None:
                    add(answer_row[0], True)
                span = (first, len(ids))
        return ids, ents, span


def _column(value, n: int, name: str) -> list:
    """A per-row argument: n values (a list, a tensor, a `datasets` column), or one value for every
    row (a scalar, a string, None; for "history", one flat list of item ids)."""
    if value is None or isinstance(value, (str, int, float)):
        return [value] * n
    values = list(value)
    if name == "history" and not (values and hasattr(values[0], "__len__") and not isinstance(values[0], str)):
        return [values] * n  # one history for every row
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values for {n} rows")
    return values


class RecSysGLMTasks:
    """One checkpoint, every task family: a model and its processor behind task-typed calls.

        tasks = RecSysGLMTasks(model, processor)
        tasks.predict_rating(users, histories, items)               # expected ratings [N]
        tasks.rank_candidates(users, histories, candidates)         # scores [N, C], higher = better
        tasks.recommend(users, histories, top_k=10).item_ids        # [N, top_k]
        tasks.explain(users, items) / tasks.summarize(reviews)      # texts

    Each call takes a template id (default: the family's first seen template; a held-out id is a
    zero-shot prompt). Ratings are the expectation over the rating values, each scored by the
    likelihood of its answer; yes / no candidates by log p(yes) - log p(no) normalised over the
    two; choice candidates by the likelihood of each candidate as the answer."""

    def __init__(self, model, processor, batch_size: int = 32):
        self.model, self.processor, self.batch_size = model, processor, int(batch_size)

    def _default(self, family: str, answer: str | None = None) -> str:
        return self.processor.template_ids(family, "seen", answer)[0]

    def _device(self):
        return next(self.model.parameters()).device

    def _batches(self, rows):
        for start in range(0, len(rows), self.batch_size):
            batch = self.processor.task_batch(rows[start: start + self.batch_size])
            yield {k: v.to(self._device()) for k, v in batch.items()}

    def _log_likelihoods(self, rows) -> torch.Tensor:
        self.model.eval()
        out = [self.model.answer_log_likelihood(**b) for b in self._batches(rows)]
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def _first_token_log_probs(self, rows, tokens: list[int]) -> torch.Tensor:
        """[N, len(tokens)] log-probabilities of `tokens` as the first answer token of inference rows
        (Part B = [START], the last column of every row)."""
        self.model.eval()
        out = []
        with torch.no_grad():
            for b in self._batches(rows):
                b.pop("labels")
                logits = self.model(**{k: v for k, v in b.items() if k != "history_item_ids"}, logits_to_keep=1).logits
                out.append(logits[:, -1].float().log_softmax(-1)[:, tokens].cpu())
        return torch.cat(out) if out else torch.zeros(0, len(tokens))

    def _check_family(self, template_id: str, family: str) -> dict:
        got, t = self.processor.template(template_id)
        if got != family:
            raise ValueError(f"template {template_id} is a {got} template, not {family}")
        return t

    def rating_distribution(self, users, histories, items, template_id: str | None = None):
        """(values [R], probabilities [N, R]) over the whole-number ratings of rating_range."""
        template_id = template_id or self._default("rating")
        self._check_family(template_id, "rating")
        items = [int(i) for i in items]
        n = len(items)
        users, histories = _column(users, n, "users"), _column(histories, n, "history")
        values = self.processor.format.tasks.rating_values()
        rows = [self.processor.encode_task(template_id, user=u, history=h, item=i, answer=v)
                for u, h, i in zip(users, histories, items) for v in values]
        scores = self._log_likelihoods(rows).view(n, len(values))
        return torch.tensor(values, dtype=torch.float32), scores.softmax(dim=-1)

    def predict_rating(self, users, histories, items, template_id: str | None = None):
        """Expected ratings [N] (the mean of rating_distribution)."""
        values, probs = self.rating_distribution(users, histories, items, template_id)
        return probs @ values

    def rank_candidates(self, users, histories, candidates, template_id: str | None = None):
        """Scores [N, C] of each user's C candidates (higher = more likely picked)."""
        template_id = template_id or self._default("direct")
        t = self._check_family(template_id, "direct")
        candidates = [[int(c) for c in row] for row in candidates]
        n = len(candidates)
        users, histories = _column(users, n, "users"), _column(histories, n, "history")
        width = len(candidates[0])
        if any(len(c) != width for c in candidates):
            raise ValueError("every user needs the same number of candidates")
        if t["answer"] == "yes_no":
            yes, no = (self.processor.format.tasks.answer_tokens("yes_no", a)[0] for a in (True, False))
            if len(yes) == len(no) == 1:  # one row per candidate: the first answer token's distribution
                rows = [self.processor.encode_task(template_id, user=u, history=h, item=c)
                        for u, h, cs in zip(users, histories, candidates) for c in cs]
                pair = self._first_token_log_probs(rows, [yes[0], no[0]]).view(n, width, 2)
            else:  # multi-token answers: each scored whole
                rows = [self.processor.encode_task(template_id, user=u, history=h, item=c, answer=a)
                        for u, h, cs in zip(users, histories, candidates) for c in cs for a in (True, False)]
                pair = self._log_likelihoods(rows).view(n, width, 2)
            return pair[..., 0] - pair.logsumexp(dim=-1)
        rows = [self.processor.encode_task(template_id, user=u, history=h, candidates=cs, answer=c)
                for u, h, cs in zip(users, histories, candidates) for c in cs]
        return self._log_likelihoods(rows).view(n, width)

    def recommend(self, users, histories, top_k: int = 10, template_id: str | None = None, **kwargs):
        """Next items by trie-constrained beam search on a sequential template: model.recommend's
        output (item_ids [N, top_k], scores, num_valid, num_generated) over all rows. kwargs go to
        model.recommend (exclude_history, num_beams, ...)."""
        template_id = template_id or self._default("sequential")
        self._check_family(template_id, "sequential")
        histories = [[int(i) for i in h] for h in histories]
        n = len(histories)
        users = _column(users, n, "users")
        rows = [self.processor.encode_task(template_id, user=u, history=h) for u, h in zip(users, histories)]
        outs = [self.model.recommend(**batch, top_k=top_k, **kwargs) for batch in self._batches(rows)]
        return type(outs[0])(**{k: torch.cat([o[k].cpu() for o in outs]) for k in outs[0].keys()})

    def generate_text(self, template_id: str, users=None, items=None, reviews=None, histories=None, features=None,
                      max_new_tokens: int | None = None, num_beams: int = 4) -> list[str]:
        """Free-text answers (explanation / summary templates), beam search with plain positions."""
        family, t = self.processor.template(template_id)
        if t["answer"] != "text":
            raise ValueError(f"template {template_id} answers with {t['answer']}, not text")
        given = [v for v in (reviews, items, users) if v is not None and not isinstance(v, (str, int))]
        if not given:
            raise ValueError("generate_text needs per-row reviews, items or users (lists)")
        n = len(list(given[0]))
        columns = [_column(v, n, name) for v, name in ((users, "users"), (items, "items"), (reviews, "reviews"),
                                                      (histories, "history"), (features, "features"))]
        rows = [self.processor.encode_task(template_id, user=u, item=i, review=r, history=h or (), feature=f)
                for u, i, r, h, f in zip(*columns)]
        limit = max_new_tokens or int(self.processor.settings["max_answer_tokens"]) + 1
        texts = []
        self.model.eval()
        for batch in self._batches(rows):
            prompt = batch["input_ids"].shape[1]
            batch.pop("labels")
            batch.pop("entity_ids")
            out = self.model.generate(**batch, plain_positions=True, num_beams=num_beams, do_sample=False,
                                      max_new_tokens=limit, eos_token_id=self.model.config.end_token_id,
                                      pad_token_id=self.processor.tokenizer.pad_token_id,
                                      suppress_tokens=self.never_in_text())
            texts += [t.strip() for t in self.processor.tokenizer.batch_decode(out[:, prompt:], skip_special_tokens=True)]
        return texts

    def never_in_text(self) -> list[int]:
        """Tokens a text answer never holds: the blanks, [START] (it would open a new span) and padding."""
        ids = self.processor.special_token_ids()
        return sorted({ids[k] for k in ("mask_token_id", "smask_token_id", "gmask_token_id", "start_token_id")}
                      | {self.processor.tokenizer.pad_token_id})

    def explain(self, users, items, template_id: str | None = None, features=None, **kwargs) -> list[str]:
        return self.generate_text(template_id or self._default("explanation"), users=users, items=items,
                                  features=features, **kwargs)

    def summarize(self, reviews, users=None, items=None, template_id: str | None = None, **kwargs) -> list[str]:
        return self.generate_text(template_id or self._default("summary"), users=users, items=items, reviews=reviews,
                                  **kwargs)


__all__ = ["ANSWER_KINDS", "FAMILIES", "PLACEHOLDERS", "SPLITS", "RecSysGLMTasks", "TaskPromptWriter",
           "check_templates", "default_templates", "sample_candidates"]
