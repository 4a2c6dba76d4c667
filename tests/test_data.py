import csv
import gzip
import json
import logging
from collections import defaultdict

import pytest

from genrec_hf.data import DataFormatError, ItemCatalog, load_sequences, recbole_ml100k_dir


# -- MovieLens-100k, checked against the raw file independently --------------------------------

@pytest.fixture(scope="module")
def ml100k():
    return load_sequences("ml-100k", k_core=0)


def _raw_ml100k_sequences():
    """Independent reference: python's sorted() is stable, so ties keep file order."""
    rows = defaultdict(list)
    with open(recbole_ml100k_dir() / "ml-100k.inter", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for line_no, (user, item, _rating, ts) in enumerate(reader):
            rows[user].append((float(ts), line_no, item))
    return {u: [item for _, _, item in sorted(r, key=lambda x: x[0])] for u, r in rows.items()}


def test_ml100k_stats(ml100k):
    stats = ml100k.stats()
    assert stats["users"] == 943
    assert stats["items"] == 1682
    assert stats["interactions"] == 100000
    assert stats["avg_length"] == pytest.approx(100000 / 943, abs=1e-3)
    assert len(ml100k.catalog) == 1682


def test_ml100k_targets_are_last_interactions(ml100k):
    raw = _raw_ml100k_sequences()
    cat = ml100k.catalog
    test, valid, train = ml100k.splits["test"], ml100k.splits["valid"], ml100k.splits["train"]
    assert len(test) == len(valid) == len(train) == 943
    for t_row, v_row, tr_row in zip(test, valid, train):
        seq = raw[t_row["user"]]
        assert v_row["user"] == tr_row["user"] == t_row["user"]
        assert cat.original_id(t_row["target"]) == seq[-1]
        assert cat.original_id(v_row["target"]) == seq[-2]
        assert [cat.original_id(i) for i in t_row["history"]] == seq[:-1]
        assert [cat.original_id(i) for i in v_row["history"]] == seq[:-2]
        assert tr_row["items"] == v_row["history"]


def test_ml100k_catalog_text(ml100k):
    cat = ml100k.catalog
    toy_story = cat.id_of("1")
    assert cat.text(toy_story) == "Toy Story"
    rich = cat.with_template("title_year_genres")
    assert rich.text(toy_story) == "Toy Story (1995); genres: Animation, Children's, Comedy"
    assert cat.with_template("{title} [{year}]").text(toy_story) == "Toy Story [1995]"
    with pytest.raises(KeyError, match="unknown item id 1682"):
        cat.text(1682)
    with pytest.raises(KeyError, match="unknown item '99999'"):
        cat.id_of("99999")


def test_catalog_roundtrip(tmp_path, ml100k):
    ml100k.catalog.save_pretrained(tmp_path)
    loaded = ItemCatalog.from_pretrained(tmp_path)
    assert loaded.texts() == ml100k.catalog.texts()
    assert loaded.original_ids == ml100k.catalog.original_ids
    with pytest.raises(FileNotFoundError, match="item_catalog.json"):
        ItemCatalog.from_pretrained(tmp_path / "nowhere")


def test_unknown_template_is_rejected():
    with pytest.raises(ValueError, match="unknown item text template 'fancy'"):
        ItemCatalog(["1"], [{"title": "a"}], template="fancy")
    cat = ItemCatalog(["1"], [{"title": "a"}], template="{title} {brand}")
    with pytest.raises(ValueError, match="field 'brand'"):
        cat.text(0)


# -- other sources --------------------------------------------------------------------------

def test_ml1m_folder(tmp_path):
    (tmp_path / "ratings.dat").write_text(
        "1::10::5::100\n1::11::3::100\n1::12::4::90\n2::10::5::5\n2::12::1::6\n2::11::2::7\n", encoding="latin-1"
    )
    (tmp_path / "movies.dat").write_text(
        "10::Heat (1995)::Action|Crime\n11::Amélie (2001)::Comedy\n12::Alien (1979)::Horror\n", encoding="latin-1"
    )
    data = load_sequences(tmp_path, k_core=0, template="title_year_genres")
    cat = data.catalog
    seq1 = [cat.original_id(i) for i in data.sequences["1"]]
    assert seq1 == ["12", "10", "11"]  # time 90 first; the tie at 100 keeps file order
    assert cat.text(cat.id_of("11")) == "Amélie (2001); genres: Comedy"
    assert data.splits["test"][0]["target"] == cat.id_of("11")


def test_ml1m_malformed_line(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::11::3\n", encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"ratings\.dat, line 2"):
        load_sequences(tmp_path, format="ml-1m")


def test_p5_format_with_item_table(tmp_path):
    seqs = tmp_path / "sequential_data.txt"
    seqs.write_text("1 5 6 7 8\n2 6 7 5\n3 5 6 7\n")
    items = tmp_path / "items.csv"
    items.write_text("item,title,brand\n5,Lipstick,Acme\n6,Mascara,Acme\n7,Soap,Bubbles\n8,Brush,\n")
    data = load_sequences(seqs, format="p5", item_file=items, k_core=0, template="attributes")
    assert data.stats() == {"users": 3, "items": 4, "interactions": 10, "avg_length": round(10 / 3, 4)}
    cat = data.catalog
    assert [cat.original_id(i) for i in data.sequences["1"]] == ["5", "6", "7", "8"]
    assert cat.text(cat.id_of("5")) == "title: Lipstick; brand: Acme"
    assert data.splits["valid"][1]["target"] == cat.id_of("7")


def test_p5_k_core_iterates(tmp_path):
    seqs = tmp_path / "seq.txt"
    # item 9 appears once; removing it leaves user 4 with 2 items, who must go too
    seqs.write_text("1 1 2 3\n2 1 2 3\n3 1 2 3\n4 1 2 9\n")
    data = load_sequences(seqs, format="p5", k_core=3)
    assert sorted(data.sequences) == ["1", "2", "3"]
    assert data.filter_report["dropped_users"] == 1
    assert data.filter_report["dropped_items"] == 1


def test_short_users_are_dropped_with_a_count(tmp_path, caplog):
    seqs = tmp_path / "seq.txt"
    seqs.write_text("1 1 2 3\n2 1 2\n3 1\n")
    with caplog.at_level(logging.WARNING, logger="genrec_hf"):
        data = load_sequences(seqs, format="p5", k_core=0)
    assert list(data.sequences) == ["1"]
    assert data.filter_report["dropped_users_below_3"] == 2
    assert "2 of them with fewer than 3 interactions" in caplog.text


def test_amazon_2014_and_2018(tmp_path):
    reviews = tmp_path / "reviews.json.gz"
    recs = [
        {"reviewerID": "u1", "asin": "A", "unixReviewTime": 3},
        {"reviewerID": "u1", "asin": "B", "unixReviewTime": 1},
        {"reviewerID": "u1", "asin": "C", "unixReviewTime": 2},
        {"user_id": "u2", "parent_asin": "A", "timestamp": 1000},  # 2023 names
        {"reviewerID": "u2", "asin": "B", "unixReviewTime": 2000},
        {"reviewerID": "u2", "asin": "C", "unixReviewTime": 3000},
    ]
    with gzip.open(reviews, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs))
    meta = tmp_path / "meta.json"
    meta.write_text(
        "{'asin': 'A', 'title': 'Alpha', 'categories': [['Beauty', 'Makeup']]}\n"  # 2014: python literal
        '{"asin": "B", "title": "Beta", "category": ["Beauty"], "brand": "X"}\n'
        '{"asin": "C", "title": "Gamma"}\n'
    )
    data = load_sequences(reviews, format="amazon", item_file=meta, k_core=0, template="attributes")
    cat = data.catalog
    assert [cat.original_id(i) for i in data.sequences["u1"]] == ["B", "C", "A"]
    assert cat.text(cat.id_of("A")) == "title: Alpha; categories: Beauty, Makeup"
    assert cat.text(cat.id_of("B")) == "title: Beta; brand: X; categories: Beauty"


def test_amazon_malformed_line(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"reviewerID": "u1", "asin": "A", "unixReviewTime": 3}\n{"reviewerID": "u1", "asin": \n')
    with pytest.raises(DataFormatError, match=r"reviews\.jsonl, line 2"):
        load_sequences(reviews, format="amazon")


def test_csv_with_dates_and_unknown_item(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text(
        "user,item,timestamp\na,x,2024-01-03\na,y,2024-01-01\na,z,2024-01-02\nb,x,2024-01-01\nb,y,2024-01-02\nb,z,2024-01-03\n"
    )
    data = load_sequences(inter, k_core=0)
    assert [data.catalog.original_id(i) for i in data.sequences["a"]] == ["y", "z", "x"]

    items = tmp_path / "items.csv"
    items.write_text("item,title\nx,X\ny,Y\n")
    with pytest.raises(ValueError, match=r"1 interacted item\(s\) are not in the item table, e.g. \['z'\]"):
        load_sequences(inter, item_file=items, k_core=0)
    kept = load_sequences(inter, item_file=items, k_core=0, missing_item_text="keep")
    assert kept.catalog.text(kept.catalog.id_of("z")) == "item z"


def test_csv_missing_column_and_bad_time(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("uid,item,timestamp\na,x,1\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['user'\]"):
        load_sequences(inter)
    inter.write_text("user,item,timestamp\na,x,1\na,y,yesterday\n")
    with pytest.raises(DataFormatError, match="row 3: 'timestamp' value 'yesterday'"):
        load_sequences(inter)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in name"):
        load_sequences(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        load_sequences(tmp_path, format="ml-1m")
    seqs = tmp_path / "seq.txt"
    seqs.write_text("1 1 2 3\n")
    with pytest.raises(FileNotFoundError, match="item table not found"):
        load_sequences(seqs, format="p5", item_file=tmp_path / "items.csv")


def test_deduplicate(tmp_path):
    seqs = tmp_path / "seq.txt"
    seqs.write_text("1 1 2 1 3 4\n")
    data = load_sequences(seqs, format="p5", k_core=0, deduplicate=True)
    assert [data.catalog.original_id(i) for i in data.sequences["1"]] == ["1", "2", "3", "4"]
    assert data.filter_report["duplicates_dropped"] == 1
