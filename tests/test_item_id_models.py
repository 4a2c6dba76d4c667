"""SASRec and GRU4Rec, the classical item-ID references (issue 12): causal, padding-blind,
RecBole's init, trainable, savable, loadable as Hub remote code, and one CLI run."""

import json
import textwrap

import pytest
import torch

from genrec_hf import GRU4RecConfig, GRU4RecForSeqRec, SASRecConfig, SASRecForSeqRec, SeqRecProcessor
from init_checks import assert_created_parameters_initialised

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HISTORIES = [[3, 5, 7, 9], [1, 2], [11, 0, 4, 23, 8, 6]]


def build(method: str, num_items: int = 24, max_items: int = 8, **overrides):
    torch.manual_seed(0)
    if method == "sasrec":
        config = SASRecConfig(num_items=num_items, max_items=max_items, hidden_size=16, intermediate_size=32, **overrides)
        return SASRecForSeqRec(config)
    config = GRU4RecConfig(num_items=num_items, max_items=max_items, embedding_size=16, hidden_size=24, **overrides)
    return GRU4RecForSeqRec(config)


METHODS = ("sasrec", "gru4rec")


def test_defaults_are_recboles():
    """RecBole's SASRec.yaml / GRU4Rec.yaml, the settings the issue names."""
    s = SASRecConfig()
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.intermediate_size, s.max_items) == (2, 64, 2, 256, 50)
    assert (s.hidden_dropout_prob, s.attention_probs_dropout_prob, s.hidden_act, s.layer_norm_eps) == (0.5, 0.5, "gelu", 1e-12)
    g = GRU4RecConfig()
    assert (g.embedding_size, g.hidden_size, g.num_hidden_layers, g.dropout_prob) == (64, 128, 1, 0.3)


def test_sasrec_starts_at_recboles_init():
    model = SASRecForSeqRec(SASRecConfig(num_items=600))
    expected = {"*_embedding.weight": (0.0, 0.02), "*norm.weight": (1.0, 0.0), "*.bias": (0.0, 0.0), "*.weight": (0.0, 0.02)}
    checked = assert_created_parameters_initialised(model, expected, ())
    assert "blocks.1.qkv.weight" in checked and "position_embedding.weight" in checked
    assert torch.all(model.item_embedding.weight[0] == 0), "the padding row must start at zero"


def test_gru4rec_starts_at_recboles_init():
    e, h = 128, 128
    model = GRU4RecForSeqRec(GRU4RecConfig(num_items=600, embedding_size=e, hidden_size=h))
    expected = {
        "item_embedding.weight": (0.0, (2 / (e + 601)) ** 0.5),  # xavier normal
        "gru.weight_ih_l0": (0.0, (2 / (e + 3 * h)) ** 0.5),  # xavier uniform: std = bound / sqrt(3)
        "gru.weight_hh_l0": (0.0, (2 / (h + 3 * h)) ** 0.5),
        "projection.*": (0.0, (1 / (3 * h)) ** 0.5),  # PyTorch's Linear default, as RecBole leaves it
    }
    assert len(assert_created_parameters_initialised(model, expected, ())) == 5
    assert torch.all(model.item_embedding.weight[0] == 0)


@pytest.mark.parametrize("method", METHODS)
def test_no_position_sees_a_later_item(method):
    model = build(method).eval()
    ids = torch.tensor([[4, 9, 2, 17, 5, 11, 3, 8]])
    base = model(input_ids=ids).hidden_states
    for t in range(1, ids.shape[1]):
        changed = ids.clone()
        changed[0, t] = 24 if changed[0, t] != 24 else 1
        hidden = model(input_ids=changed).hidden_states
        assert torch.allclose(hidden[0, :t], base[0, :t], atol=1e-6), f"a position before {t} saw item {t}"
        assert not torch.allclose(hidden[0, t], base[0, t], atol=1e-6), f"position {t} ignores its own item"


@pytest.mark.parametrize("method", METHODS)
def test_padding_is_ignored(method, catalog):
    model = build(method).eval()
    processor = SeqRecProcessor(None, catalog, method=method, max_items=8)
    alone = model.item_scores(**processor([HISTORIES[1]]))
    batched = model.item_scores(**processor(HISTORIES))  # row 1 right-padded to 6 items
    assert torch.allclose(batched[1], alone[0], atol=1e-5)
    inputs = processor(HISTORIES, targets=[1, 2, 3])
    more = {k: torch.cat([v, torch.full((3, 2), 0 if k != "labels" else -100, dtype=v.dtype)], dim=1)
            for k, v in inputs.items() if k in ("input_ids", "attention_mask", "labels")}
    assert torch.allclose(model(**more).loss, model(**{k: inputs[k] for k in more}).loss, atol=1e-6)


def test_processor_writes_item_ids_and_next_item_labels(catalog):
    processor = SeqRecProcessor(None, catalog, method="sasrec", max_items=3)
    row = processor.encode([3, 5, 7, 9], target=2)
    assert row == {"input_ids": [6, 8, 10], "labels": [7, 9, 2], "history_item_ids": [3, 5, 7, 9]}
    batch = processor(HISTORIES)
    assert batch["input_ids"].tolist()[1] == [2, 3, 0] and batch["attention_mask"].tolist()[1] == [1, 1, 0]
    assert "labels" not in batch
    with pytest.raises(ValueError, match="empty history in row 1"):
        processor([[1], []])
    with pytest.raises(ValueError, match="unknown item id 24 in row 0"):
        processor([[1, 24]])
    with pytest.raises(ValueError, match="reads item ids, not text: pass tokenizer=None"):
        SeqRecProcessor(object(), catalog, method="gru4rec")
    with pytest.raises(ValueError, match="max_items must be an integer >= 1"):
        SeqRecProcessor(None, catalog, method="gru4rec", max_items=0)


@pytest.mark.parametrize("method", METHODS)
def test_model_refuses_bad_inputs(method):
    model = build(method)
    with pytest.raises(ValueError, match="unknown item id 24 in input_ids"):
        model(input_ids=torch.tensor([[1, 25]]))
    with pytest.raises(ValueError, match="longer than max_items=8"):
        model(input_ids=torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown item id 30 in labels"):
        model(input_ids=torch.tensor([[1, 2]]), labels=torch.tensor([[3, 30]]))
    with pytest.raises(ValueError, match="empty history"):
        model.item_scores(torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("method", METHODS)
def test_loss_falls_and_the_transition_is_learned(method, catalog):
    """Toy task: every item is followed by item (i + 1) mod N; a few hundred Adam steps learn it."""
    model = build(method, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) if method == "sasrec" else build(method, dropout_prob=0.0)
    processor = SeqRecProcessor(None, catalog, method=method, max_items=8)
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(150):
        starts = torch.randint(0, 24, (16,), generator=g).tolist()
        seqs = [[(s + j) % 24 for j in range(8)] for s in starts]
        batch = processor(seqs, targets=[(s + 8) % 24 for s in starts])
        loss = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10, (losses[:3], losses[-3:])
    model.eval()
    out = model.recommend(**processor([[5, 6, 7], [20, 21, 22, 23]]), top_k=1)
    assert out.item_ids[:, 0].tolist() == [8, 0]


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_and_remote_code(method, catalog, tmp_path, run_without_genrec_hf):
    from transformers import AutoModel, AutoProcessor

    model = build(method).eval()
    processor = SeqRecProcessor(None, catalog, method=method, max_items=8)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    assert not (ckpt / "tokenizer.json").exists() and (ckpt / "modeling_item_ids.py").is_file()
    reloaded = AutoModel.from_pretrained(ckpt).eval()
    assert type(reloaded) is type(model)
    again = AutoProcessor.from_pretrained(ckpt)
    assert type(again).__name__ == type(processor).__name__ and again.settings == processor.settings
    inputs = processor(HISTORIES)
    expected = model.recommend(**inputs, top_k=5, exclude_history=True)
    assert torch.equal(reloaded.recommend(**again(HISTORIES), top_k=5, exclude_history=True).item_ids, expected.item_ids)
    json.dump({"items": expected.item_ids.tolist(), "titles": processor.decode_items(expected.item_ids)},
              open(tmp_path / "expected.json", "w"))
    run_without_genrec_hf(textwrap.dedent(f"""
        import json
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(ckpt)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(ckpt)!r}, trust_remote_code=True)
        assert "genrec_hf" not in type(model).__module__ + type(processor).__module__
        out = model.recommend(**processor({HISTORIES!r}), top_k=5, exclude_history=True)
        expected = json.load(open({str(tmp_path / 'expected.json')!r}))
        assert out.item_ids.tolist() == expected["items"], out.item_ids
        assert processor.decode_items(out.item_ids) == expected["titles"]
        print("done")
    """), "done")


def test_a_processor_for_another_catalog_is_refused(catalog, tmp_path):
    from genrec_hf.pipeline import SeqRecPipeline
    from conftest import make_catalog

    model = build("sasrec", num_items=30)
    with pytest.raises(ValueError, match="catalog size mismatch"):
        SeqRecPipeline(model, SeqRecProcessor(None, catalog, method="sasrec"))
    model.save_pretrained(tmp_path)
    SeqRecProcessor(None, make_catalog(24), method="sasrec").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="catalog size mismatch: .* num_items=30 but the processor's catalog has 24"):
        SeqRecProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("method", METHODS)
def test_cli_trains_selects_on_validation_and_evaluates(method, tmp_path, capsys):
    from genrec_hf.cli import main

    out_dir = tmp_path / "ckpt"
    assert main(["train", "--method", method, "--output-dir", str(out_dir), "--limit-users", "40", "--epochs", "2",
                 "--max-items", "10", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "best validation" in text and "split=test users=40 full ranking" in text
    info = json.loads((out_dir / "training_info.json").read_text())
    assert info["method"] == method and info["training"]["windows"] == "all" and info["training"]["early_stopping_patience"] == 10
    assert [h["epoch"] for h in info["validation_history"]] == [1.0, 2.0]
    assert info["metric_for_best_model"] == "ndcg@10" and "ndcg@10" in info["test"]
    assert "model-index" in (out_dir / "README.md").read_text()
    assert main(["evaluate", str(out_dir), "--split", "valid", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_users"] == 943
    assert main(["train", "--method", method, "--output-dir", str(tmp_path / "x"), "--backbone", "tiny"]) == 2
    assert "--backbone does not apply to --method " + method in capsys.readouterr().err
