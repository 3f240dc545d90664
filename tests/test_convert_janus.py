"""Conversion to and from transformers' built-in Janus format: reference parity, round trips, refusals, CLI scripts."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, JanusConfig, JanusForConditionalGeneration, JanusProcessor

from transformers_janus import JanusProConfig, JanusProForConditionalGeneration, JanusProProcessor
from transformers_janus.conversion import (
    JanusConversionError,
    convert_janus_pro_state_dict_to_janus,
    convert_janus_pro_to_janus,
    convert_janus_state_dict_to_janus_pro,
    convert_janus_to_janus_pro,
    janus_config_to_janus_pro,
    janus_pro_config_to_janus,
    janus_pro_processor_to_janus,
    janus_pro_to_janus,
    janus_processor_to_janus_pro,
    janus_to_janus_pro,
)


# ~10x the error measured (fp32, CPU; table in tests/fixtures/README.md): logits against DeepSeek's golden 6.1e-7 (0
# against ours), decoded pixels 7.5e-6, processor pixel values 0.
FEATURE_ATOL = 1e-5
PIXEL_ATOL = 1e-4
NORM_ATOL = 2e-6  # unit-norm codebook rows: measured 1.2e-7 (one float32 step)
REPO_ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_FIELDS = ("_name_or_path", "transformers_version", "architectures", "auto_map")


@pytest.fixture(scope="module")
def janus_model(model):
    return janus_pro_to_janus(model).eval()


@pytest.fixture(scope="module")
def processor(checkpoint_dir):
    return JanusProProcessor.from_pretrained(checkpoint_dir)


@pytest.fixture(scope="module")
def und_prompt(processor, golden_meta):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": golden_meta["und_question"]}]}
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@pytest.fixture(scope="module")
def und_image(fixture_dir):
    return Image.open(fixture_dir / "und_image.png")


def understanding_inputs(golden):
    return {
        "input_ids": golden["und.input_ids"],
        "attention_mask": golden["und.attention_mask"],
        "pixel_values": golden["und.pixel_values"][:, 0],
    }


def config_dict(config) -> dict:
    """A config as a dict without the fields that only record where it came from."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in PROVENANCE_FIELDS}
        return value

    return strip(config.to_dict())


def tiny_janus_pro_config(**overrides) -> JanusProConfig:
    kwargs = {
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "num_key_value_heads": 2, "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1},
        "vq_config": {"block_out_channels": [32, 32, 64, 64, 64], "latent_channels": 32, "num_vq_embeddings": 64},
        "image_token_id": 90, "boi_token_id": 91, "eoi_token_id": 92, "pad_token_id": 2,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            kwargs[key] = {**kwargs[key], **value}
        else:
            kwargs[key] = value
    return JanusProConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# (1) The converted built-in model computes what the reference computed
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_understanding_logits_match_ours_and_reference(model, janus_model, golden):
    inputs = understanding_inputs(golden)
    logits = janus_model(**inputs).logits
    torch.testing.assert_close(logits, model(**inputs).logits, atol=FEATURE_ATOL, rtol=0)
    torch.testing.assert_close(logits, golden["und.logits"], atol=FEATURE_ATOL, rtol=0)


@torch.no_grad()
def test_greedy_answer_matches_reference(janus_model, golden):
    inputs = understanding_inputs(golden)
    output = janus_model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert output[0, inputs["input_ids"].shape[1] :].tolist() == golden["und.greedy_new_tokens"].tolist()


@torch.no_grad()
def test_first_guided_image_step_matches_reference(janus_model, golden, golden_meta):
    hidden = janus_model.model(input_ids=golden["gen.cfg_input_ids"]).last_hidden_state[:, -1]
    logits = janus_model.model.generation_head(hidden)
    conditional, unconditional = logits[0::2], logits[1::2]
    guided = unconditional + golden_meta["cfg_weight"] * (conditional - unconditional)
    torch.testing.assert_close(guided[0], golden["gen.cfg_logits_sample0"][0], atol=FEATURE_ATOL, rtol=0)


@torch.no_grad()
def test_builtin_greedy_image_generation_matches_reference(janus_model, golden, golden_meta):
    """The built-in CFG loop, greedy, with the prompt repeated (its greedy mode refuses num_return_sequences > 1)."""
    parallel_size = golden_meta["parallel_size"]
    prompt = golden["gen.prompt_ids"].reshape(1, -1).repeat(parallel_size, 1)
    embedded_rows = []
    hook = janus_model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: embedded_rows.append(args[0].clone())
    )
    tokens = janus_model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_mode="image", do_sample=False
    )
    hook.remove()
    assert tokens.tolist() == golden["gen.greedy_image_tokens"].tolist()
    # Its own unconditional rows (BOS and <begin_of_image> kept, the rest pad) are the reference's.
    rows = embedded_rows[0]
    assert rows[:parallel_size].tolist() == golden["gen.cfg_input_ids"][0::2].tolist()
    assert rows[parallel_size:].tolist() == golden["gen.cfg_input_ids"][1::2].tolist()


@torch.no_grad()
def test_vq_decode_matches_reference(janus_model, golden):
    decoded = janus_model.model.vqmodel.decode(golden["gen.greedy_image_tokens"])
    torch.testing.assert_close(decoded, golden["gen.decoded"], atol=PIXEL_ATOL, rtol=0)


@torch.no_grad()
def test_vq_encode_matches_reference(janus_model, golden):
    codes = janus_model.model.vqmodel.encode(golden["vq.input"]).image_tokens
    assert torch.equal(codes.view(golden["vq.codes"].shape), golden["vq.codes"])


def test_processor_gives_the_reference_inputs(processor, und_prompt, und_image, golden):
    janus_processor = janus_pro_processor_to_janus(processor)
    assert janus_processor.num_image_tokens == processor.num_image_tokens
    assert not janus_processor.use_default_system_prompt
    question = {"type": "text", "text": "Describe this image in detail."}
    messages = [{"role": "user", "content": [{"type": "image"}, question]}]
    assert janus_processor.apply_chat_template(messages, add_generation_prompt=True) == und_prompt
    inputs = janus_processor(text=und_prompt, images=[und_image])
    assert inputs["input_ids"].tolist() == golden["und.input_ids"].tolist()
    torch.testing.assert_close(inputs["pixel_values"], golden["und.pixel_values"][:, 0], atol=FEATURE_ATOL, rtol=0)

    back = janus_processor_to_janus_pro(janus_processor)
    assert back.chat_template == processor.chat_template
    assert back.image_processor.to_dict() == processor.image_processor.to_dict()
    again = back(text=und_prompt, images=[und_image])
    assert again["input_ids"].tolist() == golden["und.input_ids"].tolist()
    assert torch.equal(again["pixel_values"], inputs["pixel_values"])


# ---------------------------------------------------------------------------------------------------------------
# (2) Round trip, (3) save and load
# ---------------------------------------------------------------------------------------------------------------


def test_round_trip_is_bit_identical(model, janus_model):
    """DeepSeek -> ours (the `model` fixture) -> built-in -> ours."""
    back = janus_to_janus_pro(janus_model)
    original, converted = model.state_dict(), back.state_dict()
    assert set(original) == set(converted)
    for key, tensor in original.items():
        assert converted[key].dtype == tensor.dtype and torch.equal(converted[key], tensor), key
    assert config_dict(back.config) == config_dict(model.config)
    metadata = ("_from_model_config", "transformers_version")
    generation = [
        {k: v for k, v in m.generation_config.to_diff_dict().items() if k not in metadata} for m in (back, model)
    ]
    assert generation[0] == generation[1]


def test_builtin_config_holds_what_the_builtin_model_needs(model, janus_model):
    config = janus_model.config
    assert config.image_token_id == model.config.image_token_id == 400  # `<image_placeholder>`, not 100581
    assert config.tie_word_embeddings is False
    assert config.vision_config.hidden_act == "gelu" and config.vision_config.layer_norm_eps == 1e-6
    assert janus_model.generation_config.generation_kwargs == {"boi_token_id": model.config.boi_token_id}
    assert janus_model.generation_config.pad_token_id == model.config.pad_token_id
    codebook = janus_model.model.vqmodel.quantize.embedding.weight
    torch.testing.assert_close(codebook.norm(dim=-1), torch.ones(codebook.shape[0]), atol=NORM_ATOL, rtol=0)


@torch.no_grad()
def test_saved_builtin_model_loads_with_transformers(janus_model, golden, tmp_path):
    janus_model.save_pretrained(tmp_path)
    loaded = JanusForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.generation_config.generation_kwargs == janus_model.generation_config.generation_kwargs
    for key, tensor in janus_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    inputs = understanding_inputs(golden)
    torch.testing.assert_close(loaded(**inputs).logits, golden["und.logits"], atol=FEATURE_ATOL, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"aligner_depth": 3, "gen_aligner_depth": 1},
        {"vq_config": {"layers_per_block": 1}},
        {"vq_config": {"layers_per_block": 3}},
    ],
    ids=["adaptor-depths", "one-res-block", "three-res-blocks"],
)
@torch.no_grad()
def test_other_adaptor_depths_and_res_blocks_convert_exactly(overrides):
    """The built-in modules take any adaptor depth and res-block count: these convert, exactly, both ways."""
    torch.manual_seed(0)
    model = JanusProForConditionalGeneration(tiny_janus_pro_config(**overrides)).eval()
    codebook = model.model.vq_model.quantize.embedding.weight
    codebook.copy_(torch.nn.functional.normalize(codebook, dim=-1))
    janus_model = janus_pro_to_janus(model).eval()

    input_ids = torch.tensor([[0] + [90] * 16 + [5, 6, 7]])
    pixel_values, images = torch.randn(1, 3, 64, 64), torch.rand(1, 3, 64, 64) * 2 - 1
    image_tokens = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(
        janus_model(input_ids=input_ids, pixel_values=pixel_values).logits,
        model(input_ids=input_ids, pixel_values=pixel_values).logits, atol=1e-6, rtol=0,
    )
    torch.testing.assert_close(
        janus_model.model.generation_head(janus_model.prepare_embeddings_for_image_generation(image_tokens)),
        model.get_image_logits(model.get_image_token_embeddings(image_tokens)), atol=1e-6, rtol=0,
    )
    torch.testing.assert_close(
        # measured 2.2e-5 (a bound of 10x that would loosen it)
        janus_model.model.vqmodel.decode(image_tokens), model.decode_image_tokens(image_tokens), atol=1e-4, rtol=0
    )
    assert torch.equal(
        janus_model.model.vqmodel.encode(images).image_tokens.flatten(), model.encode_image_tokens(images).flatten()
    )
    back = janus_to_janus_pro(janus_model)
    assert all(torch.equal(back.state_dict()[key], tensor) for key, tensor in model.state_dict().items())
    # `dtype` is unset on a config built from scratch and set on a loaded model's: leave it out.
    for name in ("vq_config", "vision_config", "text_config"):
        converted, original = config_dict(back.config)[name], config_dict(model.config)[name]
        converted.pop("dtype", None), original.pop("dtype", None)
        assert converted == original
    for name in ("aligner_depth", "gen_aligner_depth"):
        assert getattr(back.config, name) == getattr(model.config, name)


# ---------------------------------------------------------------------------------------------------------------
# (4) What one format cannot hold is refused, naming the field
# ---------------------------------------------------------------------------------------------------------------


def _set(config, path: str, value):
    *parents, name = path.split(".")
    for parent in parents:
        config = getattr(config, parent)
    setattr(config, name, value)


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("image_head_hidden_size", 32, "image_head_hidden_size"),
        ("vision_config.hidden_act", "gelu_pytorch_tanh", "vision_config.hidden_act"),
        ("projector_hidden_act", "silu", "projector_hidden_act"),
        ("vq_config.norm_num_groups", 16, "vq_config.norm_num_groups"),
        ("vq_config.act_fn", "relu", "vq_config.act_fn"),
        ("vq_config.block_out_channels", [64, 96, 128, 128, 256], "vq_config.block_out_channels"),
        ("vq_config.block_out_channels", [32, 32, 64, 128], "VQ token grid"),
        ("select_layer", -2, "select_layer"),
        ("vision_config.vision_use_head", True, "vision_config.vision_use_head"),
    ],
)
def test_janus_pro_config_the_builtin_format_cannot_hold_is_refused(model, path, value, named):
    config = copy.deepcopy(model.config)
    _set(config, path, value)
    with pytest.raises(JanusConversionError, match=f"`?{named}"):
        janus_pro_config_to_janus(config)


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("vision_config.use_qk_norm", True, "vision_config.use_qk_norm"),
        ("vision_config.attention_bias", False, "vision_config.attention_bias"),
        ("vision_config.projection_dropout", 0.1, "vision_config.projection_dropout"),
        ("vision_config.hidden_dropout_rate", 0.1, "vision_config.hidden_dropout_rate"),
        ("vision_config.hidden_act", "silu", "vision_config.hidden_act"),
        ("vision_config.image_size", [64, 48], "vision_config.image_size"),
        ("vision_config.projection_dim", 32, "vision_config.projection_dim"),
        ("vision_config.num_image_tokens", 9, "vision_config.num_image_tokens"),
        ("vision_config.mlp_ratio", 4.1, "vision_config.mlp_ratio"),
        ("vq_config.double_latent", True, "vq_config.double_latent"),
        ("vq_config.dropout", 0.1, "vq_config.dropout"),
        ("vq_config.projection_dim", 32, "vq_config.projection_dim"),
        ("vq_config.channel_multiplier", [2, 2, 4, 4, 8], "vq_config.channel_multiplier"),
        ("vq_config.channel_multiplier", [1, 1, 2, 2], "VQ token grid"),
    ],
)
def test_builtin_config_the_janus_pro_format_cannot_hold_is_refused(janus_model, path, value, named):
    config = copy.deepcopy(janus_model.config)
    _set(config, path, value)
    with pytest.raises(JanusConversionError, match=f"`?{named}"):
        janus_config_to_janus_pro(config)


def test_every_problem_is_named_at_once(model):
    config = copy.deepcopy(model.config)
    config.image_head_hidden_size = 32
    config.vq_config.norm_num_groups = 16
    with pytest.raises(JanusConversionError, match="image_head_hidden_size.*norm_num_groups"):
        janus_pro_config_to_janus(config)


def test_missing_and_extra_tensors_are_named(model, janus_model):
    expected = {key: tensor.shape for key, tensor in janus_model.state_dict().items()}
    state_dict = dict(model.state_dict())
    del state_dict["model.gen_head.vision_head.bias"]
    state_dict["model.aligner.layers.4.weight"] = torch.zeros(64, 64)
    with pytest.raises(JanusConversionError, match=r"missing tensors \['model\.generation_head\.vision_head\.bias'\]"):
        convert_janus_pro_state_dict_to_janus(state_dict, expected)
    with pytest.raises(JanusConversionError, match=r"unexpected tensors \['model\.aligner\.hidden_layers\.1\.weight'\]"):
        convert_janus_pro_state_dict_to_janus(state_dict, expected)

    ours = {key: tensor.shape for key, tensor in model.state_dict().items()}
    builtin = dict(janus_model.state_dict())
    builtin["model.vqmodel.encoder.down.0.block.2.conv1.weight"] = torch.zeros(32, 32, 3, 3)
    with pytest.raises(JanusConversionError, match=r"unexpected tensors \['model\.vqmodel\.encoder\.down\.0\.block\.2"):
        convert_janus_state_dict_to_janus_pro(builtin, ours)


def test_unnormalised_codebook_is_refused():
    model = JanusProForConditionalGeneration(tiny_janus_pro_config())
    with torch.no_grad():
        model.model.vq_model.quantize.embedding.weight.mul_(3.0)
    with pytest.raises(JanusConversionError, match="quantize.embedding.weight"):
        janus_pro_to_janus(model)


def test_builtin_unnormalised_codebook_is_stored_normalised(janus_model, model):
    """The built-in VQ normalises codes when decoding: ours stores them normalised, so decoding is unchanged."""
    unnormalised = copy.deepcopy(janus_model)
    with torch.no_grad():
        unnormalised.model.vqmodel.quantize.embedding.weight.mul_(torch.rand(512, 1) + 0.5)
    back = janus_to_janus_pro(unnormalised)
    torch.testing.assert_close(
        back.model.vq_model.quantize.embedding.weight, model.model.vq_model.quantize.embedding.weight, atol=NORM_ATOL, rtol=0
    )


def test_missing_special_token_ids_are_refused_and_can_be_given(janus_model, model):
    stripped = copy.deepcopy(janus_model)
    for name in ("boi_token_id", "eoi_token_id", "pad_token_id"):
        delattr(stripped.config, name)
    del stripped.generation_config.generation_kwargs
    with pytest.raises(JanusConversionError, match="boi_token_id.*eoi_token_id"):
        janus_to_janus_pro(stripped)
    given = {name: getattr(model.config, name) for name in ("boi_token_id", "eoi_token_id")}
    back = janus_to_janus_pro(stripped, special_token_ids=given)
    assert (back.config.boi_token_id, back.config.eoi_token_id, back.config.pad_token_id) == (409, 410, 2)


def test_tied_builtin_embeddings_convert_to_an_untied_copy(janus_model):
    config = JanusConfig.from_dict({**janus_model.config.to_dict(), "tie_word_embeddings": True})
    tied = JanusForConditionalGeneration(config)
    assert tied.lm_head.weight.data_ptr() == tied.get_input_embeddings().weight.data_ptr()
    back = janus_to_janus_pro(tied)
    assert back.lm_head.weight.data_ptr() != back.get_input_embeddings().weight.data_ptr()
    assert torch.equal(back.lm_head.weight, tied.get_input_embeddings().weight)


def test_processor_settings_the_builtin_cannot_hold_are_refused(processor):
    odd = copy.deepcopy(processor)
    odd.image_processor.background_color = (0, 0, 0)
    with pytest.raises(JanusConversionError, match="background_color"):
        janus_pro_processor_to_janus(odd)


def test_builtin_default_system_prompt_is_refused_unless_a_template_is_given(processor, und_prompt):
    janus_processor = janus_pro_processor_to_janus(processor)
    janus_processor.use_default_system_prompt = True
    with pytest.raises(JanusConversionError, match="use_default_system_prompt"):
        janus_processor_to_janus_pro(janus_processor)
    converted = janus_processor_to_janus_pro(janus_processor, chat_template=processor.chat_template)
    assert converted.chat_template == processor.chat_template


def test_builtin_checkpoint_with_a_wrong_image_token_id_is_refused(checkpoint_dir, tmp_path):
    convert_janus_pro_to_janus(checkpoint_dir, tmp_path / "janus")
    config = JanusConfig.from_pretrained(tmp_path / "janus")
    config.image_token_id = 401  # `<patch_placeholder>`: a default that is not this tokenizer's image token
    config.save_pretrained(tmp_path / "janus")
    with pytest.raises(JanusConversionError, match="image_token_id"):
        convert_janus_to_janus_pro(tmp_path / "janus", tmp_path / "back")


# ---------------------------------------------------------------------------------------------------------------
# (5) Checkpoint directories and the CLI scripts
# ---------------------------------------------------------------------------------------------------------------


def run_script(name: str, *args: str):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "conversion" / name), *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@torch.no_grad()
def test_cli_scripts_convert_both_ways(checkpoint_dir, model, golden, und_prompt, und_image, tmp_path):
    janus_dir, back_dir = tmp_path / "janus", tmp_path / "back"
    run_script(
        "convert_janus_pro_to_janus.py", "--src-dir", str(checkpoint_dir), "--dst-dir", str(janus_dir),
        "--dtype", "bfloat16", "--max-shard-size", "300KB",
    )
    assert (janus_dir / "model.safetensors.index.json").exists()  # sharded
    janus_model = JanusForConditionalGeneration.from_pretrained(janus_dir)
    assert janus_model.dtype == torch.bfloat16
    janus_processor = AutoProcessor.from_pretrained(janus_dir)
    assert isinstance(janus_processor, JanusProcessor)
    inputs = janus_processor(text=und_prompt, images=[und_image])
    assert inputs["input_ids"].tolist() == golden["und.input_ids"].tolist()

    run_script(
        "convert_janus_to_janus_pro.py", "--src-dir", str(janus_dir), "--dst-dir", str(back_dir), "--dtype", "float32"
    )
    back = JanusProForConditionalGeneration.from_pretrained(back_dir)
    assert back.dtype == torch.float32
    assert config_dict(back.config) == config_dict(model.config)
    codebook = "model.vq_model.quantize.embedding.weight"
    for key, tensor in model.state_dict().items():  # bf16 on the way: equal to bf16 rounding
        if key != codebook:
            assert torch.equal(back.state_dict()[key], tensor.to(torch.bfloat16).float()), key
    # The bf16 codebook is normalised again in fp32, as the built-in VQ does when it decodes.
    # bf16 keeps 8 mantissa bits: 2^-9 relative on entries up to ~1, renormalised; measured 3.5e-3
    torch.testing.assert_close(back.state_dict()[codebook], model.state_dict()[codebook], atol=1e-2, rtol=0)
    torch.testing.assert_close(back.state_dict()[codebook].norm(dim=-1), torch.ones(512), atol=NORM_ATOL, rtol=0)
    back_processor = AutoProcessor.from_pretrained(back_dir)
    assert isinstance(back_processor, JanusProProcessor)
    again = back_processor(text=und_prompt, images=[und_image])
    assert again["input_ids"].tolist() == golden["und.input_ids"].tolist()
    torch.testing.assert_close(again["pixel_values"], golden["und.pixel_values"][:, 0], atol=FEATURE_ATOL, rtol=0)


def test_checkpoint_without_tokenizer_converts_the_model_only(model, tmp_path):
    model.save_pretrained(tmp_path / "ours")
    converted = convert_janus_pro_to_janus(tmp_path / "ours", tmp_path / "janus")
    assert isinstance(converted, JanusForConditionalGeneration)
    assert not (tmp_path / "janus" / "processor_config.json").exists()
    back = convert_janus_to_janus_pro(tmp_path / "janus", tmp_path / "back")
    assert isinstance(back, JanusProForConditionalGeneration)
    assert all(torch.equal(back.state_dict()[key], tensor) for key, tensor in model.state_dict().items())
