"""Bad input files get a clear error naming the file and line, or are read right (issue 13)."""

import gzip
import json

import pytest

from genrec_hf.data import DataFormatError, read_interaction_table, read_item_table, read_p5, read_recbole_atomic

P5_TEXT = "u1 a b c\nu2 b c d\n"


def test_gzip_is_recognised_by_content_not_by_name(tmp_path):
    packed = tmp_path / "sequences.txt"  # gzip without .gz
    packed.write_bytes(gzip.compress(P5_TEXT.encode()))
    raw = read_p5(packed)
    assert raw.users[:4] == ["u1"] * 3 + ["u2"] and raw.items[:3] == ["a", "b", "c"]
    table = tmp_path / "interactions.csv"
    table.write_bytes(gzip.compress(b"user,item,timestamp\nu1,a,1\nu1,b,2\n"))
    assert read_interaction_table(table).items == ["a", "b"]
    plain = tmp_path / "named.gz"  # .gz that is not gzip: read as the text it is
    plain.write_text(P5_TEXT)
    assert read_p5(plain).items[:3] == ["a", "b", "c"]


def test_truncated_gzip_is_named(tmp_path):
    broken = tmp_path / "sequences.txt.gz"
    lines = "".join(f"u{n} a b c\n" for n in range(2000))
    broken.write_bytes(gzip.compress(lines.encode())[:200])
    with pytest.raises(DataFormatError, match=r"sequences\.txt\.gz: broken gzip data"):
        read_p5(broken)


def test_a_byte_order_mark_does_not_become_part_of_the_first_id(tmp_path):
    p5 = tmp_path / "sequences.txt"
    p5.write_bytes(b"\xef\xbb\xbf" + P5_TEXT.encode())
    assert read_p5(p5).users[0] == "u1"
    table = tmp_path / "interactions.csv"
    table.write_bytes(b"\xef\xbb\xbfuser,item,timestamp\nu1,a,1\n")
    assert read_interaction_table(table).users == ["u1"]  # the column is "user", not "\ufeffuser"
    atomic = tmp_path / "toy"
    atomic.mkdir()
    (atomic / "toy.inter").write_bytes(b"\xef\xbb\xbfuser_id:token\titem_id:token\ttimestamp:float\r\n1\t10\t5\r\n")
    raw = read_recbole_atomic(atomic)
    assert (raw.users, raw.items, raw.timestamps) == (["1"], ["10"], [5.0])  # CRLF endings stripped too
    items = tmp_path / "items.json"
    items.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": "Alpha"}).encode())
    assert read_item_table(items) == {"a": {"title": "Alpha"}}


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    p5 = tmp_path / "sequences.txt"
    p5.write_bytes(b"u1 a b\nu2 caf\xe9 d\n")  # latin-1
    with pytest.raises(DataFormatError, match=r"sequences\.txt, line 2: not valid utf-8 text .*column 7.*convert"):
        read_p5(p5)
    table = tmp_path / "interactions.csv"
    table.write_bytes(b"user,item,timestamp\nu1,a,1\nu1,caf\xe9,2\n")
    with pytest.raises(DataFormatError, match=r"interactions\.csv, line 3: not valid utf-8"):
        read_interaction_table(table)


def test_a_comma_separated_file_given_as_p5_says_so(tmp_path):
    table = tmp_path / "interactions.txt"
    table.write_text("user,item,timestamp\nu1,a,1\n")
    with pytest.raises(DataFormatError, match=r"line 1: 'user,item,timestamp' looks comma-separated.*--format csv"):
        read_p5(table)
    lonely = tmp_path / "lonely.txt"
    lonely.write_text("u1\n")  # a user alone is still that error
    with pytest.raises(DataFormatError, match="user 'u1' has no items"):
        read_p5(lonely)


def test_ids_that_mix_numbers_and_strings_are_refused(tmp_path):
    rows = [{"user": 1, "item": "a", "timestamp": 1}, {"user": "1", "item": "b", "timestamp": 2}]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataFormatError, match=r"mixed\.jsonl, row 3: 'user' mixes numbers \(1, row 2\) and strings \('1', row 3\)"):
        read_interaction_table(mixed)
    fractional = tmp_path / "fractional.jsonl"
    fractional.write_text("\n".join(json.dumps({"user": "u", "item": i, "timestamp": t}) for t, i in enumerate([1, 2.5])))
    with pytest.raises(DataFormatError, match=r"row 3: 'item' value 2.5 is not an id"):
        read_interaction_table(fractional)
    widened = tmp_path / "widened.jsonl"  # integral floats are the ids they stand for
    widened.write_text("\n".join(json.dumps({"user": 7.0, "item": i, "timestamp": t}) for t, i in enumerate([1.0, 2.0])))
    raw = read_interaction_table(widened)
    assert (raw.users, raw.items) == (["7", "7"], ["1", "2"])


def test_cli_errors_are_one_line_with_exit_code_2_and_a_traceback_only_with_debug(tmp_path, capsys, monkeypatch):
    from genrec_hf import cli

    table = tmp_path / "interactions.txt"
    table.write_text("user,item,timestamp\nu1,a,1\n")
    assert cli.main(["data", "stats", str(table), "--format", "p5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "looks comma-separated" in err and "Traceback" not in err

    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "cmd_data_stats", broken)  # main() builds its parser from the module's names
    argv = ["data", "stats", str(table)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == "error: RuntimeError: something unexpected (rerun with --debug for the traceback)\n"
    with pytest.raises(RuntimeError, match="something"):
        cli.main(["--debug", *argv])


def test_pickle_weights_are_refused_unless_the_caller_opts_in(tmp_path):
    import torch
    from transformers import AutoModel

    from genrec_hf import SASRecConfig, SASRecForSeqRec

    torch.manual_seed(0)
    model = SASRecForSeqRec(SASRecConfig(num_items=12, max_items=5, hidden_size=8, inner_size=16))
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    for load in (SASRecForSeqRec.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(OSError, match=r"pickle weights only \(pytorch_model\.bin\).*allow_pickle=True"):
            load(tmp_path)
        loaded = load(tmp_path, allow_pickle=True)
        assert isinstance(loaded, SASRecForSeqRec)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    loaded.save_pretrained(tmp_path / "converted")  # the way out the message names
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    assert isinstance(SASRecForSeqRec.from_pretrained(tmp_path / "converted"), SASRecForSeqRec)
