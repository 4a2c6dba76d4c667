"""Ratings and reviews carried through loading (issue 11): aligned with the sequences, held out
per user with the leave-one-out cut."""

import csv
import gzip
import json
import math

import pytest

from genrec_hf.data import load_sequences, recbole_ml100k_dir


@pytest.fixture(scope="module")
def ml100k():
    return load_sequences("ml-100k")


def test_ml100k_ratings_follow_the_raw_file(ml100k):
    # independent reference: the (user, item) pair is unique in ml-100k, so its rating is known
    raw = {}
    with open(recbole_ml100k_dir() / "ml-100k.inter", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for user, item, rating, _ in reader:
            raw[(user, item)] = float(rating)
    cat = ml100k.catalog
    for user in ("1", "196", "943"):
        got = [r["rating"] for r in ml100k.feedback[user]]
        assert got == [raw[(user, cat.original_id(i))] for i in ml100k.sequences[user]]


def test_feedback_splits_use_the_leave_one_out_cut(ml100k):
    splits = ml100k.feedback_splits()
    test, valid = splits["test"], splits["valid"]
    assert len(test) == len(valid) == 943
    assert test["item"] == ml100k.splits["test"]["target"]
    assert valid["item"] == ml100k.splits["valid"]["target"]
    assert test[0]["history"] == ml100k.splits["test"][0]["history"]
    # no held-out (user, item) is a training row
    held_out = set(zip(test["user"], test["item"])) | set(zip(valid["user"], valid["item"]))
    train = splits["train"]
    assert not held_out & set(zip(train["user"], train["item"]))
    assert len(train) == 100000 - 2 * 943
    assert set(train["rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    short = ml100k.feedback_splits(max_history=5)
    assert short["test"][0]["history"] == ml100k.splits["test"][0]["history"][-5:]
    assert short["train"][0]["history"] == [] and short["train"]["rating"] == train["rating"]


def test_amazon_reviews_keep_rating_review_and_summary(tmp_path):
    reviews = tmp_path / "reviews.json.gz"
    recs = [
        {"reviewerID": "u1", "asin": "A", "unixReviewTime": 3, "overall": 5.0, "reviewText": "Great.", "summary": "Yes"},
        {"reviewerID": "u1", "asin": "B", "unixReviewTime": 1, "overall": 2.0, "reviewText": "Meh."},
        {"reviewerID": "u1", "asin": "C", "unixReviewTime": 2},  # nothing said
        {"user_id": "u2", "parent_asin": "A", "timestamp": 1, "rating": 4, "text": "Fine", "title": "ok"},  # 2023
        {"reviewerID": "u2", "asin": "B", "unixReviewTime": 2, "overall": 3.0},
        {"reviewerID": "u2", "asin": "C", "unixReviewTime": 3, "overall": 1.0},
    ]
    with gzip.open(reviews, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs))
    data = load_sequences(reviews, format="amazon", k_core=0)
    assert data.feedback["u1"] == [{"rating": 2.0, "review": "Meh."}, {}, {"rating": 5.0, "review": "Great.", "summary": "Yes"}]
    assert data.feedback["u2"][0] == {"rating": 4.0, "review": "Fine", "summary": "ok"}
    splits = data.feedback_splits()
    by_user = {r["user"]: r for r in splits["test"]}
    assert by_user["u1"]["review"] == "Great." and by_user["u1"]["summary"] == "Yes"
    valid = {r["user"]: r for r in splits["valid"]}
    assert math.isnan(valid["u1"]["rating"]) and valid["u1"]["review"] == ""


def test_table_rating_column_and_bad_rating(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,timestamp,rating\na,x,1,4\na,y,2,5\na,z,3,\n")
    data = load_sequences(inter, k_core=0)
    assert data.feedback["a"] == [{"rating": 4.0}, {"rating": 5.0}, {}]
    inter.write_text("user,item,timestamp,rating\na,x,1,4\na,y,2,great\na,z,3,1\n")
    with pytest.raises(ValueError, match=r"inter\.csv, line 3: rating 'great' is not a number"):
        load_sequences(inter, k_core=0)


def test_sources_without_feedback_say_so(tmp_path):
    seq = tmp_path / "sequential_data.txt"
    seq.write_text("1 10 11 12\n2 10 12 13\n")
    data = load_sequences(seq, format="p5", k_core=0)
    assert data.feedback is None
    with pytest.raises(ValueError, match="no ratings or reviews"):
        data.feedback_splits()


def test_ml100k_user_table_is_loaded(ml100k):
    assert len(ml100k.user_features) == 943
    assert ml100k.user_features["1"] == {"age": "24", "gender": "M", "occupation": "technician", "zip_code": "85711"}
    assert ml100k.user_features["943"]["occupation"] == "student"
