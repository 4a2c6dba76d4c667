"""Initial values of every parameter genrec_hf creates, for each way a model is built.

Built from a config, wrapped around a (pretrained) backbone, and reloaded: the created
parameters start from their stated distribution, a wrapped backbone keeps its weights, and a
reload keeps the trained values (no re-init on load).
"""

import pytest
import torch
from transformers import AutoModel, BartConfig, BartForConditionalGeneration

from genrec_hf.backbones import tiny_config
from genrec_hf.models import GenRecConfig, GenRecForConditionalGeneration, ST2SIConfig, ST2SIForItemPrediction
from init_checks import assert_created_parameters_initialised

GENREC_PARAMS = {"id_embedding.user_embeddings.weight": (0.0, 0.02), "id_embedding.item_embeddings.weight": (0.0, 0.02)}


def _bart_config():
    return BartConfig(vocab_size=300, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_genrec_id_tables_start_at_initializer_range_from_a_config():
    torch.manual_seed(0)
    model = GenRecForConditionalGeneration(GenRecConfig(text_config=_bart_config(), num_users=300, num_items=400))
    assert_created_parameters_initialised(model, GENREC_PARAMS, ("bart.",))


def test_genrec_id_tables_start_at_initializer_range_from_bart_and_bart_is_kept(tmp_path):
    torch.manual_seed(0)
    bart = BartForConditionalGeneration(_bart_config())
    with torch.no_grad():  # stand-in for pretrained weights: values no init would produce
        for p in bart.parameters():
            p.add_(0.5)
    before = _state(bart)
    model = GenRecForConditionalGeneration.from_bart(bart, num_users=300, num_items=400, id_init_std=0.05)
    assert_created_parameters_initialised(model, {k: (0.0, 0.05) for k in GENREC_PARAMS}, ("bart.",))
    after = model.bart.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "wrapping re-initialised the pretrained BART"
    model.save_pretrained(tmp_path)
    reloaded = GenRecForConditionalGeneration.from_pretrained(tmp_path)
    for name, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name]), f"{name} changed on reload"


@pytest.mark.parametrize("ilp_bias", [False, True])
def test_st2si_ilp_starts_at_initializer_range(ilp_bias, tmp_path):
    torch.manual_seed(0)
    config = ST2SIConfig(text_config=tiny_config("llama", vocab_size=300), num_items=500, query_token_id=5, ilp_bias=ilp_bias)
    expected = {"ilp.weight": (0.0, 0.02), "ilp.bias": (0.0, 0.0)}
    assert_created_parameters_initialised(ST2SIForItemPrediction(config), expected, ("backbone.",))
    backbone = AutoModel.from_config(tiny_config("llama", vocab_size=300))
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.5)
    before = _state(backbone)
    model = ST2SIForItemPrediction.from_backbone(backbone, num_items=500, query_token_id=5, ilp_bias=ilp_bias)
    assert_created_parameters_initialised(model, expected, ("backbone.",))
    assert all(torch.equal(before[k], model.backbone.state_dict()[k]) for k in before), "wrapping re-initialised the backbone"
    with torch.no_grad():
        model.ilp.weight.mul_(3.0)  # "trained" values must survive a reload
    model.save_pretrained(tmp_path)
    reloaded = ST2SIForItemPrediction.from_pretrained(tmp_path)
    assert torch.equal(reloaded.ilp.weight, model.ilp.weight)


def test_st2si_ilp_has_no_bias_by_default():
    """Eq. 5 is Softmax(W h) and the official code has no bias; the bias is an option."""
    assert ST2SIConfig().ilp_bias is False
    model = ST2SIForItemPrediction(ST2SIConfig(text_config=tiny_config("llama", vocab_size=300), num_items=50, query_token_id=5))
    assert model.ilp.bias is None


def test_the_check_refuses_an_untested_parameter():
    model = ST2SIForItemPrediction(ST2SIConfig(text_config=tiny_config("llama", vocab_size=300), num_items=500, query_token_id=5))
    model.extra = torch.nn.Linear(64, 64)  # a parameter nobody stated an init for
    with pytest.raises(AssertionError, match="extra.weight .* has no init expectation"):
        assert_created_parameters_initialised(model, {"ilp.weight": (0.0, 0.02)}, ("backbone.",))
    with torch.no_grad():
        model.ilp.weight.normal_(0.0, 1.0)  # the bug the check exists for: PyTorch's N(0, 1)
    with pytest.raises(AssertionError, match="ilp.weight starts with std"):
        assert_created_parameters_initialised(model, {"ilp.weight": (0.0, 0.02), "extra.*": (0.0, 0.1)}, ("backbone.",))


LANCER_PARAMS = {
    "knowledge_prompt.embedding.weight": (0.0, 1.0),  # nn.Embedding's N(0, 1), as PEFT's prefix encoder starts it
    "*.weight": (0.0, 0.02),  # every prompt linear (knowledge MLP, reasoning Q/K/V and MLP)
    "*.bias": (0.0, 0.0),
}


def _lancer_lm(seed=0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=300, num_key_value_heads=2))


def _lancer_kwargs():
    # prompt_hidden_size 64: every prompt weight has enough values for the std check
    return {"num_knowledge_tokens": 20, "history_slots": 4, "prompt_hidden_size": 64}


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _lora_b(model):
    return {name: p for name, p in model.named_parameters() if "lora_B" in name}


def test_lancer_prompts_start_at_their_stated_init_from_a_config():
    from genrec_hf.models import LancerConfig, LancerForSeqRec

    torch.manual_seed(0)
    config = LancerConfig(text_config=tiny_config("llama", vocab_size=300, num_key_value_heads=2), num_items=20,
                          separator_token_ids=[7], **_lancer_kwargs())
    model = LancerForSeqRec(config)
    checked = assert_created_parameters_initialised(model, LANCER_PARAMS, ("lm.",))
    assert {"knowledge_prompt.embedding.weight", "reasoning_prompt.query.weight", "reasoning_prompt.key.bias",
            "reasoning_prompt.mlp.down.weight", "knowledge_prompt.mlp.up.bias"} <= set(checked)
    # a config that already has LoRA (a stage-2 checkpoint being rebuilt): the adapters start as a no-op
    config.lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    with_lora = LancerForSeqRec(config)
    assert _lora_b(with_lora) and all(bool((p == 0).all()) for p in _lora_b(with_lora).values())


def test_lancer_wrapping_keeps_the_lm_and_lora_starts_as_a_no_op(tmp_path):
    from genrec_hf.models import LancerForSeqRec

    lm = _lancer_lm()
    with torch.no_grad():  # stand-in for pretrained weights: values no init would produce
        for p in lm.parameters():
            p.add_(0.5)
    before = _state(lm)
    model = LancerForSeqRec.from_lm(lm, num_items=20, separator_token_ids=[7], **_lancer_kwargs())
    assert_created_parameters_initialised(model, LANCER_PARAMS, ("lm.",))
    after = model.lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "wrapping re-initialised the pretrained LM"

    prompts = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("lm.")}
    model.enable_lora(r=4, target_modules=["q_proj", "v_proj"])
    lora_b = _lora_b(model)
    assert len(lora_b) == 2 * 2  # two target modules in each of the two layers
    assert all(bool((p == 0).all()) for p in lora_b.values()), "LoRA B must start at exactly zero"
    base = {k.replace(".base_layer", ""): v for k, v in model.lm.state_dict().items() if "lora_" not in k}
    assert base.keys() == before.keys() and all(torch.equal(before[k], base[k]) for k in before), "enable_lora changed the LM"
    assert all(_same(v, model.state_dict()[k]) for k, v in prompts.items()), "enable_lora changed the prompts"

    with torch.no_grad():  # "trained" values must survive a reload, the adapters included
        model.knowledge_prompt.embedding.weight.mul_(3.0)
        for p in lora_b.values():
            p.normal_()
    model.save_pretrained(tmp_path)
    reloaded = LancerForSeqRec.from_pretrained(tmp_path)
    state = reloaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert _same(value, state[name]), f"{name} changed on reload"
