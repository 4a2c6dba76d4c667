"""Training data for the item-ID references (SASRec, GRU4Rec) with an unchanged HF `Trainer`.

Each row is a window of a user's training sequence labelled with the next item at every
position (causal models train all positions in one pass). Windows per user (`windows=`, the
same choices as ST2SI's): "all" (default) covers every transition of the sequence once, like
RecBole's prefix augmentation, which makes each prefix a sample; the difference is context: a
RecBole sample always sees the `max_items` items before its target, a position early in an "all"
window sees fewer. "random" draws a fresh span per user and epoch; "last" keeps the newest window.
"""

from __future__ import annotations

from datasets import Dataset

from .st2si import RandomWindowRows, check_windows, evaluation_rows, training_windows


def item_id_training_rows(processor, sequences, windows: str | int = "all") -> list[dict]:
    """Rows {input_ids, labels} from training sequences; rows without a label are skipped."""
    rows = []
    for seq in sequences:
        for chunk, following in training_windows(seq, processor.settings["max_items"], windows):
            row = processor.encode(chunk, following)
            if any(label != -100 for label in row["labels"]):
                rows.append({"input_ids": row["input_ids"], "labels": row["labels"]})
    return rows


def item_id_datasets(processor, data, windows: str | int = "all", limit_users: int | None = None, seed: int = 0):
    """(train, validation) for SASRec / GRU4Rec; validation rows carry one label (the validation
    target), so Trainer's eval averages per user. Pad with `SeqRecCollator(processor)`."""
    windows = check_windows(windows)
    train_split, valid_split = data.train_valid(limit_users)
    if windows == "random":
        train = RandomWindowRows(processor, train_split["items"], seed=seed)
    else:
        train = Dataset.from_list(item_id_training_rows(processor, train_split["items"], windows))
    valid = Dataset.from_list(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in evaluation_rows(processor, valid_split)]
    )
    return train, valid


__all__ = ["item_id_datasets", "item_id_training_rows"]
