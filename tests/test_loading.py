"""Loading: DeepSeek's format in all its file layouts, our own save/load round trip, dtypes, Auto classes, bad files."""

import json
import re
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


# ----------------------------------------------------------------------------------------------------------------
# Bad checkpoints in our format (and DeepSeek's): one error naming the file or the tensors, nothing loaded in silence
# ----------------------------------------------------------------------------------------------------------------

from safetensors.torch import load_file  # noqa: E402

from transformers_janus.utils import CheckpointError  # noqa: E402


@pytest.fixture(scope="module")
def ours_dir(model, tmp_path_factory):
    """The fixture model saved in our format (single safetensors file)."""
    directory = tmp_path_factory.mktemp("ours")
    model.save_pretrained(directory)
    return directory


def copy_ours(ours_dir, destination, state_dict=None, weights="safetensors"):
    """Our checkpoint's config files into `destination`, with `state_dict` (default: the saved one) as its weights."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in ours_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, destination / path.name)
    state_dict = load_file(ours_dir / "model.safetensors") if state_dict is None else state_dict
    if weights == "safetensors":
        save_file(state_dict, destination / "model.safetensors", metadata={"format": "pt"})
    else:
        torch.save(state_dict, destination / "pytorch_model.bin", _use_new_zipfile_serialization=weights == "bin")
    return destination


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_our_format_missing_tensor_is_an_error_naming_it(ours_dir, tmp_path, weights):
    state_dict = load_file(ours_dir / "model.safetensors")
    del state_dict["model.gen_embed.weight"]
    destination = copy_ours(ours_dir, tmp_path / "partial", state_dict, weights)
    for load in (JanusProForConditionalGeneration.from_pretrained, AutoModel.from_pretrained, AutoModelForImageTextToText.from_pretrained):
        with pytest.raises(CheckpointError, match=r"missing tensors \['model\.gen_embed\.weight'\].*strict=False"):
            load(destination)


def test_our_format_unexpected_tensor_is_an_error_naming_it(ours_dir, tmp_path):
    state_dict = load_file(ours_dir / "model.safetensors")
    state_dict["model.gen_head.extra.weight"] = torch.zeros(2)
    destination = copy_ours(ours_dir, tmp_path / "extra", state_dict)
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['model\.gen_head\.extra\.weight'\]"):
        JanusProForConditionalGeneration.from_pretrained(destination)


def test_pipeline_refuses_a_partial_checkpoint(ours_dir, checkpoint_dir, tmp_path):
    from transformers_janus import JanusProImagePipeline

    state_dict = load_file(ours_dir / "model.safetensors")
    del state_dict["model.vq_model.quantize.embedding.weight"]
    destination = copy_ours(ours_dir, tmp_path / "partial", state_dict)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json", "preprocessor_config.json"):
        if not (destination / name).exists() and (checkpoint_dir / name).exists():
            shutil.copy(checkpoint_dir / name, destination / name)
    with pytest.raises(CheckpointError, match=r"model\.vq_model\.quantize\.embedding\.weight"):
        JanusProImagePipeline.from_pretrained(destination)


def test_incomplete_checkpoint_loads_when_asked_explicitly(ours_dir, model, tmp_path):
    state_dict = load_file(ours_dir / "model.safetensors")
    del state_dict["model.gen_embed.weight"]
    destination = copy_ours(ours_dir, tmp_path / "partial", state_dict)
    loaded = JanusProForConditionalGeneration.from_pretrained(destination, strict=False)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    _, info = JanusProForConditionalGeneration.from_pretrained(destination, output_loading_info=True)
    assert info["missing_keys"] == {"model.gen_embed.weight"}
    # A state dict given in memory, with no checkpoint, is the caller's to complete (transformers' own idiom).
    JanusProForConditionalGeneration.from_pretrained(None, config=model.config, state_dict={})


def test_our_format_mismatched_shape_names_the_tensor(ours_dir, tmp_path):
    state_dict = load_file(ours_dir / "model.safetensors")
    state_dict["model.gen_embed.weight"] = state_dict["model.gen_embed.weight"][:-1].contiguous()
    destination = copy_ours(ours_dir, tmp_path / "mismatch", state_dict)
    with pytest.raises(CheckpointError, match=r"model\.gen_embed\.weight: checkpoint \(511, 8\) vs model \(512, 8\)"):
        JanusProForConditionalGeneration.from_pretrained(destination)


@pytest.mark.parametrize("outside", ["relative", "absolute"])
def test_shard_index_naming_files_outside_the_checkpoint_is_refused(ours_dir, tmp_path, outside):
    destination = copy_ours(ours_dir, tmp_path / "ckpt")
    state_dict = load_file(destination / "model.safetensors")
    (destination / "model.safetensors").unlink()
    keys = sorted(state_dict)
    save_file({key: state_dict[key] for key in keys[:10]}, destination / "model-00001-of-00002.safetensors")
    outside_file = tmp_path / "elsewhere.safetensors"  # a valid shard: refused for where it is, not what it holds
    save_file({key: state_dict[key] for key in keys[10:]}, outside_file)
    name = "../elsewhere.safetensors" if outside == "relative" else str(outside_file)
    weight_map = {key: "model-00001-of-00002.safetensors" for key in keys[:10]} | dict.fromkeys(keys[10:], name)
    (destination / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    # Checked before transformers resolves the shards (5.25 would refuse with its own message, 5.24 not at all).
    with pytest.raises(CheckpointError, match="names weight files outside the checkpoint folder") as error:
        JanusProForConditionalGeneration.from_pretrained(destination)
    assert repr([name]) in str(error.value)


def test_deepseek_shard_index_naming_files_outside_is_refused_as_deepseek(checkpoint_dir, original_state_dict, tmp_path):
    destination = copy_config_files(checkpoint_dir, tmp_path / "sharded")
    write_sharded(original_state_dict, destination, "bin")
    index_path = destination / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    moved = "pytorch_model-00002-of-00002.bin"
    shutil.move(destination / moved, tmp_path / moved)
    index["weight_map"] = {key: "../" + moved if name == moved else name for key, name in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    with pytest.raises(DeepSeekCheckpointError, match="names weight files outside the checkpoint folder") as error:
        JanusProForConditionalGeneration.from_pretrained(destination)
    assert repr(["../" + moved]) in str(error.value)


class NotATensor:
    """Pickled by reference to its class: loading it needs code, which `weights_only=True` refuses."""


@pytest.mark.parametrize("format_", ["ours", "deepseek"])
def test_pickle_with_objects_is_refused_naming_the_file(ours_dir, checkpoint_dir, original_state_dict, tmp_path, format_):
    if format_ == "ours":
        destination = copy_ours(ours_dir, tmp_path / "ours", weights="bin")
        state_dict = torch.load(destination / "pytorch_model.bin", weights_only=True)
    else:
        destination = copy_config_files(checkpoint_dir, tmp_path / "deepseek")
        state_dict = dict(original_state_dict)
    state_dict["payload"] = NotATensor()
    torch.save(state_dict, destination / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin holds code or objects that are not tensors, so it was not loaded") as error:
        JanusProForConditionalGeneration.from_pretrained(destination)
    assert "weights_only" not in str(error.value)


def test_legacy_non_zip_bin_of_plain_tensors_loads(ours_dir, checkpoint_dir, original_state_dict, model, tmp_path):
    deepseek = copy_config_files(checkpoint_dir, tmp_path / "deepseek")
    torch.save(original_state_dict, deepseek / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert_same_weights(JanusProForConditionalGeneration.from_pretrained(deepseek), model)
    ours = copy_ours(ours_dir, tmp_path / "ours", weights="legacy")
    assert_same_weights(JanusProForConditionalGeneration.from_pretrained(ours), model)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_our_format_truncated_weight_file_names_the_file(ours_dir, tmp_path, weights):
    destination = copy_ours(ours_dir, tmp_path / "truncated", weights=weights)
    path = destination / ("model.safetensors" if weights == "safetensors" else "pytorch_model.bin")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r" cannot be read .*truncated or corrupted"):
        JanusProForConditionalGeneration.from_pretrained(destination)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"config\.json is not valid JSON"),
        ("[1, 2]", r"config\.json holds a JSON list, not an object"),
        ('{"model_type": "bert"}', r"config\.json describes a 'bert' model, not Janus-Pro\. .*janus_pro.*multi_modality"),
        ('{"model_type": "janus"}', r"built-in `janus` format.*janus-pro convert SRC DST --to ours"),
    ],
)
def test_bad_config_json_is_one_error_naming_the_file(ours_dir, tmp_path, content, message):
    destination = copy_ours(ours_dir, tmp_path / "bad")
    (destination / "config.json").write_text(content)
    for load in (JanusProForConditionalGeneration.from_pretrained, JanusProConfig.from_pretrained):
        with pytest.raises(CheckpointError, match=message) as error:
            load(destination)
        assert str(destination / "config.json") in str(error.value)


def test_deepseek_load_gives_every_tensor_its_own_storage(model):
    """SigLIP's q/k/v split from DeepSeek's fused qkv must not stay views of one storage: a plain safetensors save
    (`Accelerator.save_state`) would keep one and drop the others."""
    tensors = list(model.state_dict().values())
    storages = [tensor.untyped_storage() for tensor in tensors]
    assert len({storage.data_ptr() for storage in storages}) == len(storages)
    assert all(storage.nbytes() == t.numel() * t.element_size() for storage, t in zip(storages, tensors))
