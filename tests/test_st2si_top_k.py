"""ST2SI's top-k tuning (issue 12): the top k layers + ILP train, the frozen lower part runs once."""

import time

import pytest
import torch
from transformers import AutoModel

from genrec_hf import ST2SIForItemPrediction, SeqRecProcessor
from genrec_hf.backbones import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]


def top_k_model(model_type, processor, tune_layers=1):
    torch.manual_seed(0)
    backbone = AutoModel.from_config(tiny_config(model_type, vocab_size=len(processor.tokenizer)))
    return ST2SIForItemPrediction.from_backbone(backbone, num_items=len(processor.catalog), query_token_id=processor.query_token_id,
                                                vocab_size=len(processor.tokenizer), tune_mode="top_k", tune_layers=tune_layers)


@pytest.fixture
def processor(catalog, tokenizer_factory):
    return SeqRecProcessor(tokenizer_factory(), catalog, method="st2si")


@pytest.mark.parametrize("model_type", ["llama", "opt", "gpt2"])
def test_cached_lower_states_give_the_full_forward_and_skip_the_lower_layers(model_type, processor):
    from genrec_hf.models.st2si.modeling_st2si import decoder_layers

    model = top_k_model(model_type, processor).eval()
    inputs = processor(HISTORIES, targets=[4, 9, 10])
    full = model(**inputs)
    lower = model.lower_hidden_states(inputs["input_ids"], inputs["attention_mask"])
    assert lower.shape == (*inputs["input_ids"].shape, model.backbone.config.hidden_size)
    calls = []
    layers = decoder_layers(model.backbone)
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, layer in enumerate(layers)]
    cached = model(**inputs, lower_hidden_states=lower)
    for h in hooks:
        h.remove()
    assert calls == [len(layers) - 1], f"layers run with cached states: {calls}"
    assert torch.allclose(cached.logits, full.logits, atol=1e-5) and torch.allclose(cached.loss, full.loss, atol=1e-6)
    assert not torch.allclose(model(**inputs, lower_hidden_states=torch.zeros_like(lower)).logits, full.logits)
    assert all(isinstance(layer, torch.nn.Module) and type(layer).__name__ != "_SkipLayer" for layer in layers)  # restored


@pytest.mark.parametrize("model_type", ["llama", "opt"])
def test_only_the_top_layers_what_follows_them_and_the_ilp_train(model_type, processor):
    model = top_k_model(model_type, processor, tune_layers=1)
    prefix = "backbone.layers.1." if model_type == "llama" else "backbone.decoder.layers.1."
    final_norm = "backbone.norm." if model_type == "llama" else "backbone.decoder.final_layer_norm."
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith((prefix, final_norm, "ilp.")) for n in trainable), trainable
    assert any(n.startswith(final_norm) for n in trainable) and "ilp.weight" in trainable
    inputs = processor(HISTORIES, targets=[4, 9, 10])
    model.train()
    lower = model.lower_hidden_states(inputs["input_ids"], inputs["attention_mask"])
    model(**inputs, lower_hidden_states=lower).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == trainable


def test_top_k_refuses_what_it_cannot_do(processor):
    with pytest.raises(ValueError, match="tune_layers=5 but the backbone has 2 layers"):
        top_k_model("llama", processor, tune_layers=5)
    with pytest.raises(ValueError, match="tune_layers must be an integer >= 1"):
        top_k_model("llama", processor, tune_layers=0)
    model = top_k_model("llama", processor)
    model.set_tune_mode("full")
    inputs = processor(HISTORIES)
    with pytest.raises(ValueError, match="lower_hidden_states are for tune_mode='top_k'"):
        model(**inputs, lower_hidden_states=torch.zeros(*inputs["input_ids"].shape, 64))


def test_train_st2si_top_k_freezes_the_lower_part_and_reloads(tmp_path):
    from genrec_hf.data import load_sequences
    from genrec_hf.models.st2si.modeling_st2si import decoder_layers
    from genrec_hf.training.recipes import ST2SITrainingConfig, train_st2si

    data = load_sequences("ml-100k")
    cfg = ST2SITrainingConfig(backbone="tiny", tune_mode="top_k", tune_layers=1, windows="last", max_items=5, epochs=2,
                              limit_users=12, progress=False, early_stopping_patience=0)
    torch.manual_seed(cfg.seed)
    model, processor, valid = train_st2si(data, str(tmp_path / "ckpt"), cfg)
    assert "eval_ndcg@10" in valid
    reloaded = AutoModel.from_pretrained(tmp_path / "ckpt")
    assert reloaded.config.tune_mode == "top_k" and reloaded.config.tune_layers == 1
    # the frozen lower layer is the initial backbone's; the tuned one moved
    from genrec_hf.backbones import load_backbone
    from transformers import set_seed

    set_seed(cfg.seed)
    initial, _ = load_backbone("tiny", texts=data.catalog.texts())
    lower, top = (dict(layer.named_parameters()) for layer in decoder_layers(reloaded.backbone))
    first, second = (dict(layer.named_parameters()) for layer in decoder_layers(initial))
    assert all(torch.equal(lower[n], first[n]) for n in lower)
    assert any(not torch.equal(top[n], second[n]) for n in top)
    out = reloaded.recommend(**processor([[1, 2, 3]]), top_k=5, exclude_history=True)
    assert out.item_ids.shape == (1, 5) and not {1, 2, 3} & set(out.item_ids[0].tolist())


def test_cli_top_k_flags(tmp_path, capsys):
    from genrec_hf.cli import main

    for extra, message in ((["--tune-layers", "2"], "--tune-layers applies only with --tune-mode top-k"),
                           (["--tune-mode", "top-k"], "--tune-mode top-k computes the frozen layers once per window")):
        assert main(["train", "--method", "st2si", "--output-dir", str(tmp_path / "x"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--method", "sasrec", "--output-dir", str(tmp_path / "x"), "--tune-layers", "2"]) == 2
    assert "--tune-layers applies only to --method st2si" in capsys.readouterr().err


def test_time_budget_stops_at_the_first_validation_past_it():
    from transformers import TrainerControl, TrainerState

    from genrec_hf.training.recipes import TimeBudgetCallback

    with pytest.raises(ValueError, match="max_train_minutes"):
        TimeBudgetCallback(0)
    callback, state, control = TimeBudgetCallback(1e-9), TrainerState(), TrainerControl()
    callback.on_evaluate(None, state, control)  # before training began: nothing to measure
    assert not control.should_training_stop
    callback.on_train_begin(None, state, control)
    time.sleep(0.01)
    callback.on_evaluate(None, state, control)
    assert control.should_training_stop
    patient, control = TimeBudgetCallback(60), TrainerControl()
    patient.on_train_begin(None, state, control)
    patient.on_evaluate(None, state, control)
    assert not control.should_training_stop


def test_max_train_minutes_reaches_the_st2si_config_and_is_refused_elsewhere(capsys, tmp_path):
    from genrec_hf.cli import _training_config, build_parser, main

    args = build_parser().parse_args(["train", "--method", "st2si", "--max-train-minutes", "2.5", "--output-dir", "unused"])
    args.backbone = "tiny"
    assert _training_config(args).max_train_minutes == 2.5
    assert main(["train", "--method", "sasrec", "--max-train-minutes", "5", "--output-dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-train-minutes applies only to --method st2si"
    assert not (tmp_path / "x").exists()
