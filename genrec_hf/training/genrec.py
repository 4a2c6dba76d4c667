"""GenRec training data for an unchanged HF `Trainer`: one collator per stage (§4.2, §4.3).

Rows are raw (`items` + `user` for training, `history` + `target` + `user` for evaluation);
the collator tokenizes them, so pretraining draws a new masked position every epoch. Pass
`remove_unused_columns=False` in TrainingArguments (the rows are not forward() arguments).
"""

from __future__ import annotations

from datasets import Dataset

from ..processing import SeqRecProcessor
from .draws import EpochDraws, row_key

STAGES = ("pretrain", "finetune")


class GenRecCollator(EpochDraws):
    """Pads GenRec rows for one stage.

    pretrain: one random item of the training sequence becomes [MASK] and the target. The
        training sequence already excludes each user's last two items (validation and test
        targets), so the mask never touches them.
    finetune: [MASK] is appended and the sequence's last item is the target ("last", as in
        the paper), or a random cut point picks history and target ("random": every transition).
    Evaluation rows (with `target`) always get [MASK] appended and their own target.

    Protocol note: the training sequence ends before the validation item, so "the last item"
    here is the third-to-last interaction, one step earlier than the paper's finetuning target
    (which trains on the item used for validation). Validation stays unseen, so choosing the
    best epoch on it is honest (design.md §3).

    unknown_user_prob: the share of training rows whose user is replaced by the unknown-user
    token (not in the paper). Without it that token and its ID row never train, yet they are
    what `recommend` uses for a history without a known user; 0 gives the paper's setting.
    """

    def __init__(
        self, processor: SeqRecProcessor, stage: str, finetune_targets: str = "last", seed: int = 0,
        unknown_user_prob: float = 0.1,
    ):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if finetune_targets not in ("last", "random"):
            raise ValueError(f"finetune_targets must be 'last' or 'random', got {finetune_targets!r}")
        if not 0.0 <= unknown_user_prob <= 1.0:
            raise ValueError(f"unknown_user_prob must be in [0, 1], got {unknown_user_prob}")
        super().__init__(seed)
        self.processor = processor
        self.stage = stage
        self.finetune_targets = finetune_targets
        self.unknown_user_prob = unknown_user_prob

    def encode_row(self, row: dict) -> dict:
        p, user = self.processor, row.get("user")
        if "target" in row:
            return p.encode(row["history"], int(row["target"]), user=user)
        items = list(row["items"])
        if len(items) < 2 and self.stage == "finetune":
            raise ValueError(f"user {user!r}: finetuning needs at least two training items")
        rng = self.rng(row_key(row))  # masks, cut points, unknown users: exact under --resume / torchrun
        if self.unknown_user_prob and rng.random() < self.unknown_user_prob:
            user = None
        if self.stage == "pretrain":
            window = p.window(items)
            return p.encode(items, user=user, mask_position=rng.randrange(len(window)))
        cut = len(items) - 1 if self.finetune_targets == "last" else rng.randrange(1, len(items))
        return p.encode(items[:cut], items[cut], user=user)

    def __call__(self, features: list[dict]) -> dict:
        # raw ids index the item token table, where -1 would silently be the last item: refuse bad
        # ids (and empty histories) here, naming the batch row
        self.processor.check_histories([list(f["history"] if "target" in f else f["items"]) for f in features])
        self.processor.check_histories([[f["target"]] for f in features if "target" in f])
        rows = [self.encode_row(f) for f in features]
        keys = [k for k in self.processor.format.output_keys if k != "history_item_ids"]
        return dict(self.processor.pad({k: [r[k] for r in rows] for k in keys}, return_tensors="pt"))


def genrec_entity_texts(data, item_text_ids: str = "random") -> list[str]:
    """The item and user words GenRec's tokenizer must hold whole ("item_12", "user_3", "user_unk")."""
    users = len(data.splits["train"]["user"])
    numbers = range(len(data.catalog)) if item_text_ids == "random" else data.catalog.original_ids
    return [f"item_{n}" for n in numbers] + [f"user_{r}" for r in range(users + 1)] + ["user_unk"]


def genrec_datasets(data, stage: str, limit_users: int | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation) raw rows; finetuning skips users with a single training item."""
    train, valid = data.train_valid(limit_users)
    min_items = 2 if stage == "finetune" else 1
    train = train.filter(lambda row: len(row["items"]) >= min_items)
    return train, valid
