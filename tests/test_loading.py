"""Loading: DeepSeek's format in all its file layouts, our own save/load round trip, dtypes, Auto classes, bad files."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from transformers_janus import JanusProConfig, JanusProForConditionalGeneration, JanusProModel
from transformers_janus.deepseek_format import DeepSeekCheckpointError


def copy_config_files(checkpoint_dir, destination):
    destination.mkdir(parents=True, exist_ok=True)
    for path in checkpoint_dir.iterdir():
        if not path.name.endswith(".bin"):
            shutil.copy(path, destination / path.name)
    return destination


def write_sharded(state_dict, destination, suffix):
    """Two shards plus an index, the layout of the published 7B checkpoint (`.bin`) or of safetensors exports."""
    keys = sorted(state_dict)
    prefix = "model" if suffix == "safetensors" else "pytorch_model"
    shards = {f"{prefix}-00001-of-00002.{suffix}": keys[: len(keys) // 2], f"{prefix}-00002-of-00002.{suffix}": keys[len(keys) // 2 :]}
    weight_map = {}
    for filename, shard_keys in shards.items():
        shard = {key: state_dict[key].contiguous() for key in shard_keys}
        if suffix == "safetensors":
            save_file(shard, destination / filename, metadata={"format": "pt"})
        else:
            torch.save(shard, destination / filename)
        weight_map.update(dict.fromkeys(shard_keys, filename))
    index_name = "model.safetensors.index.json" if suffix == "safetensors" else "pytorch_model.bin.index.json"
    (destination / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def assert_same_weights(first, second):
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key, tensor in first_state.items():
        assert torch.equal(tensor, second_state[key]), key


@pytest.fixture(scope="module")
def original_state_dict(checkpoint_dir):
    return torch.load(checkpoint_dir / "pytorch_model.bin", weights_only=True)


def test_auto_classes_resolve_to_the_full_model(checkpoint_dir, model):
    config = AutoConfig.from_pretrained(checkpoint_dir)
    assert isinstance(config, JanusProConfig)
    # Special tokens come from the tokenizer by text, not from the 7B defaults.
    assert (config.image_token_id, config.boi_token_id, config.eoi_token_id, config.pad_token_id) == (400, 409, 410, 2)
    for auto_class in (AutoModel, AutoModelForImageTextToText):
        loaded = auto_class.from_pretrained(checkpoint_dir)
        assert type(loaded) is JanusProForConditionalGeneration
        assert_same_weights(loaded, model)


def test_headless_base_model_loads_from_deepseek_format(checkpoint_dir, model):
    base = JanusProModel.from_pretrained(checkpoint_dir)
    assert_same_weights(base, model.model)


def test_save_and_load_round_trip_is_bit_identical(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "janus_pro"
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert_same_weights(reloaded, model)
    assert reloaded.config.image_token_id == model.config.image_token_id


def test_sharded_save_loads(model, tmp_path):
    model.save_pretrained(tmp_path, max_shard_size="200KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert_same_weights(JanusProForConditionalGeneration.from_pretrained(tmp_path), model)


@pytest.mark.parametrize("suffix", ["safetensors", "bin"])
def test_sharded_deepseek_checkpoint_loads(checkpoint_dir, original_state_dict, model, tmp_path, suffix):
    destination = copy_config_files(checkpoint_dir, tmp_path / "sharded")
    write_sharded(original_state_dict, destination, suffix)
    assert_same_weights(JanusProForConditionalGeneration.from_pretrained(destination), model)


def test_single_safetensors_deepseek_checkpoint_loads(checkpoint_dir, original_state_dict, model, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "single")
    save_file({key: value.contiguous() for key, value in original_state_dict.items()}, destination / "model.safetensors")
    assert_same_weights(JanusProForConditionalGeneration.from_pretrained(destination), model)


def test_flash_attention_request_is_ignored_without_flash_attn(checkpoint_dir, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "flash")
    shutil.copy(checkpoint_dir / "pytorch_model.bin", destination)
    config = json.loads((destination / "config.json").read_text())
    config["language_config"]["_attn_implementation"] = "flash_attention_2"
    (destination / "config.json").write_text(json.dumps(config))
    loaded = JanusProForConditionalGeneration.from_pretrained(destination)
    assert loaded.config.text_config._attn_implementation != "flash_attention_2"


# (max, mean) absolute error against fp32; measured bf16: logits 0.018/0.003, decode 0.125/0.012 (pixels up to 1.8);
# fp16: logits 0.003/0.0004, decode 0.02/0.002. DeepSeek's own VQ casts to bf16 in fp16 and breaks there.
HALF_TOLERANCES = {torch.bfloat16: {"logits": (0.05, 0.01), "decoded": (0.25, 0.03)},
                   torch.float16: {"logits": (0.01, 0.002), "decoded": (0.05, 0.005)}}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loads_and_stays_close_to_fp32(checkpoint_dir, golden, dtype):
    half = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=dtype).eval()
    assert half.dtype == dtype and half.model.vq_model.dtype == dtype
    inputs = {"input_ids": golden["und.input_ids"], "pixel_values": golden["und.pixel_values"][:, 0]}
    with torch.no_grad():
        logits = half(**inputs).logits.float()
        decoded = half.decode_image_tokens(golden["gen.greedy_image_tokens"]).float()
    assert torch.isfinite(logits).all() and torch.isfinite(decoded).all()
    for name, actual, expected in (("logits", logits, golden["und.logits"]), ("decoded", decoded, golden["gen.decoded"])):
        max_error, mean_error = HALF_TOLERANCES[dtype][name]
        assert (actual - expected).abs().max() < max_error, name
        assert (actual - expected).abs().mean() < mean_error, name


def test_auto_dtype_reads_the_checkpoint_dtype(checkpoint_dir):
    assert JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, dtype="auto").dtype == torch.float32


def test_config_attributes_override_while_loading(checkpoint_dir):
    loaded = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir, output_hidden_states=True)
    assert loaded.config.output_hidden_states is True


def test_legacy_torch_dtype_argument_and_device_map_auto(checkpoint_dir):
    loaded = AutoModelForImageTextToText.from_pretrained(checkpoint_dir, torch_dtype=torch.bfloat16, device_map="auto")
    assert loaded.dtype == torch.bfloat16
    assert loaded.device.type == "cpu"


def test_truncated_weight_file_names_the_file(checkpoint_dir, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "truncated")
    data = (checkpoint_dir / "pytorch_model.bin").read_bytes()
    (destination / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(DeepSeekCheckpointError, match=r"pytorch_model\.bin.*truncated or corrupted"):
        JanusProForConditionalGeneration.from_pretrained(destination)


def test_truncated_safetensors_names_the_file(checkpoint_dir, original_state_dict, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "truncated")
    save_file({key: value.contiguous() for key, value in original_state_dict.items()}, destination / "model.safetensors")
    data = (destination / "model.safetensors").read_bytes()
    (destination / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(DeepSeekCheckpointError, match=r"model\.safetensors.*truncated or corrupted"):
        JanusProForConditionalGeneration.from_pretrained(destination)


def test_unknown_component_class_is_refused(checkpoint_dir, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "unknown")
    config = json.loads((destination / "config.json").read_text())
    config["gen_vision_config"]["cls"] = "VQ-32"
    (destination / "config.json").write_text(json.dumps(config))
    with pytest.raises(DeepSeekCheckpointError, match=r"gen_vision_config\.cls.*'VQ-32'"):
        AutoConfig.from_pretrained(destination)


def test_mismatched_shapes_name_the_tensor(checkpoint_dir, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "mismatch")
    shutil.copy(checkpoint_dir / "pytorch_model.bin", destination)
    config = json.loads((destination / "config.json").read_text())
    config["gen_head_config"]["params"]["image_token_embed"] = 32
    (destination / "config.json").write_text(json.dumps(config))
    with pytest.raises(DeepSeekCheckpointError, match=r"gen_head\.output_mlp_projector\.weight: checkpoint \(64, 64\) vs model \(32, 64\)"):
        JanusProForConditionalGeneration.from_pretrained(destination)


def test_missing_and_extra_tensors_are_named(checkpoint_dir, original_state_dict, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "partial")
    state_dict = dict(original_state_dict)
    del state_dict["gen_embed.weight"]
    state_dict["gen_head.extra.weight"] = torch.zeros(2)
    torch.save(state_dict, destination / "pytorch_model.bin")
    with pytest.raises(DeepSeekCheckpointError, match=r"missing tensors \['model\.gen_embed\.weight'\].*unexpected tensors \['model\.gen_head\.extra\.weight'\]"):
        JanusProForConditionalGeneration.from_pretrained(destination)


def test_auto_tokenizer_resolves_through_the_model_type(checkpoint_dir, model, tmp_path):
    """Without a `tokenizer_class` in tokenizer_config.json, AutoTokenizer goes by config.json's model type."""
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(checkpoint_dir)
    for name, directory in (("deepseek", copy_config_files(checkpoint_dir, tmp_path / "deepseek")), ("ours", tmp_path / "ours")):
        if name == "ours":
            model.save_pretrained(directory)
            reference.save_pretrained(directory)
        tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
        tokenizer_config.pop("tokenizer_class", None)
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        text = "<|User|>: <image_placeholder>\nDescribe.\n\n<|Assistant|>:<begin_of_image>"
        assert tokenizer(text).input_ids == reference(text).input_ids


def test_deepseek_load_records_the_real_source(checkpoint_dir, model, tmp_path):
    """Adapter configs and model cards name `config.name_or_path`: it is the source, not the string "None"."""
    assert model.config.name_or_path == str(checkpoint_dir)
    assert model.name_or_path == str(checkpoint_dir)
    model.save_pretrained(tmp_path)
    # transformers 5 leaves `_name_or_path` out of saved configs; it must at least never be "None".
    assert json.loads((tmp_path / "config.json").read_text()).get("_name_or_path", str(checkpoint_dir)) == str(checkpoint_dir)
    peft = pytest.importorskip("peft")
    fresh = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)  # LoRA wraps in place: not the shared one
    adapted = peft.get_peft_model(fresh, peft.LoraConfig(target_modules=["q_proj"], r=2))
    assert adapted.peft_config["default"].base_model_name_or_path == str(checkpoint_dir)


def test_deepseek_load_goes_through_transformers_loader(model):
    """DeepSeek's weights are read by transformers' loader, through the conversion mapping registered for `janus_pro`."""
    from transformers_janus.deepseek_format import DeepSeekConverter, DeepSeekRenaming

    used = {type(transform) for transform in model._weight_conversions}
    assert {DeepSeekRenaming, DeepSeekConverter} <= used


@pytest.mark.parametrize("source", ["deepseek", "config"])
def test_saving_writes_our_keys_never_deepseek_ones(checkpoint_dir, model, tmp_path, source):
    """transformers reverts a load's conversion mapping on save; ours is one-way, so a save is always in our format."""
    from safetensors import safe_open

    saved = model if source == "deepseek" else JanusProForConditionalGeneration(model.config)
    saved.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as handle:
        keys = set(handle.keys())
    assert keys == set(saved.state_dict())
    for prefix in ("vision_model.vision_tower.", "gen_vision_model.", "language_model.model."):
        assert not any(key.startswith(prefix) for key in keys)
    assert_same_weights(JanusProForConditionalGeneration.from_pretrained(tmp_path), saved)


def test_headless_model_saves_and_reloads_in_our_format(model, tmp_path):
    model.model.save_pretrained(tmp_path)
    reloaded = JanusProModel.from_pretrained(tmp_path)
    assert_same_weights(reloaded, model.model)
    full = JanusProForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)[1]
    assert full["missing_keys"] == {"lm_head.weight"}
