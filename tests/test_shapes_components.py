"""The shapes world's trained components: BPE tokenizer, VQ autoencoder, SigLIP pretraining, and their assembly."""

import numpy as np
import pytest
import torch

from transformers_janus.shapes.text import text_conversation
from transformers_janus.shapes.world import COLOUR_NAMES, SHAPES, Scene, SceneObject, WorldSpec


TINY_VQ = {"block_out_channels": [16, 16, 16, 16], "layers_per_block": 1, "latent_channels": 16,
           "num_vq_embeddings": 64, "vq_embed_dim": 8, "norm_num_groups": 8}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "image_size": 128, "patch_size": 8}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers_janus.shapes.tokenizer import conversation_texts, train_tokenizer

    rng = np.random.default_rng(0)
    records = [text_conversation(rng) for _ in range(200)] + [{"caption": "a photo of two red circles"}]
    return train_tokenizer(conversation_texts(records), vocab_size=600)


def tiny_vq():
    from diffusers import VQModel

    from transformers_janus import JanusProVQConfig

    torch.manual_seed(0)
    return VQModel(**JanusProVQConfig(**TINY_VQ).to_diffusers_kwargs())


def tiny_vision():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    return SiglipVisionModel(SiglipVisionConfig(**TINY_VISION, hidden_act="gelu", layer_norm_eps=1e-6,
                                                vision_use_head=False))


# Tokenizer


def test_tokenizer_has_janus_special_tokens_and_round_trips(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from transformers_janus.utils import SPECIAL_TOKENS, read_special_token_ids

    tokenizer.save_pretrained(tmp_path)
    ids = read_special_token_ids(tmp_path)
    assert set(ids) == set(SPECIAL_TOKENS)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|User|>: <image_placeholder>\nWhat colour is the square?\n\n<|Assistant|>: green"
    encoded = loaded(text).input_ids
    assert encoded[0] == loaded.bos_token_id  # BOS from the template, as DeepSeek's tokenizer adds it
    tokens = loaded.convert_ids_to_tokens(encoded)
    for special in ("<|User|>", "<image_placeholder>", "<|Assistant|>"):
        assert tokens.count(special) == 1
    assert loaded.decode(encoded, skip_special_tokens=False).endswith(text)
    # The world's words are whole tokens (the BPE learned them), so the text is short.
    assert len(loaded("What colour is the square?").input_ids) <= 8
    assert len(loaded) <= 600


# VQ autoencoder


def test_vq_inference_codes_equal_training_codes_and_loss_falls():
    """The stored (normalised) codebook makes `VQModel.quantize`'s Euclidean search pick the cosine-nearest code
    training used: encoding through the inference path gives exactly the training path's codes."""
    from transformers_janus.shapes.autoencoder import _quantize, scene_batch, train_vq_autoencoder

    vq = tiny_vq()
    losses = []
    train_vq_autoencoder(vq, 30, batch_size=4, crop_size=32, seed=0, log=losses.append, log_every=1)
    assert losses[-1]["reconstruction_loss"] < 0.6 * losses[0]["reconstruction_loss"]
    norms = vq.quantize.embedding.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    images, _ = scene_batch(np.random.default_rng(3), 3, WorldSpec())
    with torch.no_grad():
        latents = vq.encode(images).latents
        _, training_codes, _, _ = _quantize(vq, latents, 0.25)
        _, _, (_, _, inference_codes) = vq.quantize(latents)
    assert torch.equal(training_codes, inference_codes.flatten())


def test_reconstruction_accuracy_reads_perfect_and_broken_autoencoders(monkeypatch):
    import transformers_janus.shapes.autoencoder as autoencoder

    vq = tiny_vq()
    monkeypatch.setattr(autoencoder, "reconstruct", lambda vq, images: images)  # a perfect autoencoder
    assert autoencoder.reconstruction_accuracy(vq, 40, seed=0) == 1.0
    assert autoencoder.reconstruction_accuracy(vq, 20, seed=0, held_out_only=True) == 1.0
    monkeypatch.setattr(autoencoder, "reconstruct", lambda vq, images: torch.ones_like(images))  # a blank canvas
    assert autoencoder.reconstruction_accuracy(vq, 40, seed=0) == 0.0


def test_vq_refinement_trains_only_under_the_bar_and_at_most_its_rounds(monkeypatch):
    import transformers_janus.shapes.autoencoder as autoencoder

    vq = tiny_vq()
    before = {name: value.clone() for name, value in vq.state_dict().items()}
    monkeypatch.setattr(autoencoder, "reconstruct", lambda vq, images: images)  # reads every scene right
    assert autoencoder.refine_vq_autoencoder(vq, 0.98, steps=2, check_scenes=10) == [1.0]
    assert all(torch.equal(before[name], value) for name, value in vq.state_dict().items())  # not trained
    monkeypatch.setattr(autoencoder, "reconstruct", lambda vq, images: torch.ones_like(images))  # reads none
    records = []
    checks = autoencoder.refine_vq_autoencoder(vq, 0.98, steps=2, max_rounds=2, check_scenes=10, batch_size=4,
                                               log=records.append, step_offset=100)
    assert checks == [0.0, 0.0, 0.0]
    assert [(record["step"], record["round"], record["full_images"]) for record in records] == [
        (101, 1, True), (102, 1, True), (103, 2, True), (104, 2, True)]
    assert not all(torch.equal(before[name], value) for name, value in vq.state_dict().items())


@pytest.fixture(scope="module")
def trained_tiny_vq():
    from transformers_janus.shapes.autoencoder import train_vq_autoencoder

    return train_vq_autoencoder(tiny_vq(), 30, batch_size=4, crop_size=32, seed=0)


def _codes(vq, scenes):
    from transformers_janus.shapes.autoencoder import scene_pixels

    with torch.no_grad():
        latents = vq.encode(scene_pixels(scenes)).latents
        return vq.quantize(latents)[2][2].view(len(scenes), -1).numpy()


def test_token_object_mask_marks_the_patches_holding_an_object_pixel():
    from transformers_janus.shapes.autoencoder import token_object_mask

    scene = Scene(objects=(SceneObject("square", "red", 8, 16, 20),), background=(230, 230, 230))
    mask = token_object_mask([scene], 128, 8).reshape(16, 16)
    expected = np.zeros((16, 16), dtype=bool)
    expected[2:5, 1:4] = True  # pixels 16..35 down, 8..27 across
    assert np.array_equal(mask, expected)


def test_merged_background_codes_give_background_tokens_one_code(trained_tiny_vq):
    """Merging leaves the background one code (the lowest merged index, which both nearest-code searches pick),
    on scenes it never saw, and leaves the encoder, the decoder and every unmerged code as they were."""
    import copy

    from transformers_janus.shapes.autoencoder import _quantize, merge_background_codes, scene_batch, token_object_mask

    vq = copy.deepcopy(trained_tiny_vq)
    before = {name: value.clone() for name, value in vq.state_dict().items()}
    images, scenes = scene_batch(np.random.default_rng(11), 24, WorldSpec())
    background = ~token_object_mask(scenes, 128, 8)
    codes_before = _codes(vq, scenes)
    merged = merge_background_codes(vq, num_scenes=100, seed=0)
    codes_after = _codes(vq, scenes)
    code = merged["background_code"]
    assert merged["merged_codes"] > 1 and merged["background_tokens_merged"] > 0.5
    weight = vq.quantize.embedding.weight
    same = (weight - weight[code]).norm(dim=1) == 0
    assert int(same.sum()) == merged["merged_codes"] and code == int(same.nonzero()[0])
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(len(weight)))
    changed = [name for name in before if not torch.equal(before[name], vq.state_dict()[name])]
    assert changed == ["quantize.embedding.weight"]
    assert torch.equal(weight[~same], before["quantize.embedding.weight"][~same])
    # Background tokens: spread over several codes before, mostly one code after; the codes it took are gone.
    assert len(np.unique(codes_before[background])) > 2 * len(np.unique(codes_after[background]))
    assert (codes_after[background] == code).mean() > 0.8 > (codes_before[background] == code).mean()
    assert not np.isin(codes_after, same.nonzero().squeeze(1).numpy()[1:]).any()
    with torch.no_grad():  # training's argmax agrees with inference's argmin on the tie
        _, training_codes, _, _ = _quantize(vq, vq.encode(images).latents, 0.25)
    assert np.array_equal(training_codes.view(len(scenes), -1).numpy(), codes_after)


def test_decoder_only_refinement_keeps_every_code(trained_tiny_vq):
    import copy

    from transformers_janus.shapes.autoencoder import train_vq_autoencoder

    vq = copy.deepcopy(trained_tiny_vq)
    before = {name: value.clone() for name, value in vq.state_dict().items()}
    train_vq_autoencoder(vq, 3, batch_size=2, crop_size=None, decoder_only=True)
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], vq.state_dict()[name])}
    assert changed == {"decoder", "post_quant_conv"}


def test_vq_training_images_hold_no_held_out_pair():
    from transformers_janus.shapes.autoencoder import scene_batch
    from transformers_janus.shapes.world import HELD_OUT_PAIRS

    _, scenes = scene_batch(np.random.default_rng(0), 200, WorldSpec())
    assert not set().union(*(scene.pairs() for scene in scenes)) & HELD_OUT_PAIRS


# SigLIP pretraining


def test_patch_labels_mark_the_patches_an_object_covers():
    from transformers_janus.shapes.vision_encoder import count_labels, patch_labels

    square = SceneObject("square", "blue", x=16, y=32, size=24)  # pixels 16..39 x 32..55
    triangle = SceneObject("triangle", "red", x=80, y=80, size=30)
    scene = Scene(objects=(square, triangle), background=(230, 230, 230))
    colours, shapes = patch_labels([scene], patch_size=8, image_size=128)
    grid = colours.view(16, 16)
    blue, sq = COLOUR_NAMES.index("blue") + 1, SHAPES.index("square") + 1
    assert (grid[4:7, 2:5] == blue).all() and (shapes.view(16, 16)[4:7, 2:5] == sq).all()
    assert (grid[0:3] == 0).all() and (grid[:, 14:] == 0).all()
    red = COLOUR_NAMES.index("red") + 1
    # The triangle's apex row holds few pixels; its base rows are red.
    assert (grid[13, 10:14] == red).all()
    counts = count_labels([scene])[0]
    assert counts.sum() == 4  # two (colour, shape) counts and two shape counts
    assert counts[COLOUR_NAMES.index("blue") * 3 + SHAPES.index("square")] == 1


def test_vision_pretraining_learns_the_patches():
    from transformers_janus.shapes.vision_encoder import pretrain_vision_encoder

    vision = tiny_vision()
    logs = []
    pretrain_vision_encoder(vision, 40, batch_size=8, learning_rate=3e-3, warmup_steps=5, seed=0,
                            log=logs.append, log_every=1)
    first, last = logs[0], logs[-1]
    assert last["colour_loss"] < 0.5 * first["colour_loss"]
    assert last["shape_loss"] < 0.5 * first["shape_loss"]
    assert not vision.training


@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_vision_pretraining_keeps_the_features_spread(autocast_dtype):
    """Probes alone let the features collapse onto one vector (the recipe's encoder once kept 0.035 per channel
    across images); the variance term keeps them spread (this tiny encoder, 150 steps: about 0.44 without it).
    Under bfloat16 autocast too (autocast entered around the whole loop trained on stale weights: 0.28)."""
    from transformers_janus.shapes.vision_encoder import feature_spread, pretrain_vision_encoder

    vision = tiny_vision()
    logs = []
    pretrain_vision_encoder(vision, 150, batch_size=8, learning_rate=3e-3, warmup_steps=5, seed=0, log=logs.append,
                            autocast_dtype=autocast_dtype)
    spread = feature_spread(vision, seed=1)
    assert spread["across_image_std"] > 0.8
    assert spread["mean_norm"] < 0.75 * spread["token_norm"]
    assert logs[-1]["variance_loss"] < 0.5 * logs[0]["variance_loss"]


def test_vision_pretraining_refuses_another_canvas():
    from transformers_janus.shapes.vision_encoder import pretrain_vision_encoder

    with pytest.raises(ValueError, match="image_size"):
        pretrain_vision_encoder(tiny_vision(), 1, world=WorldSpec.for_image_size(96))


# Assembly


def test_assembled_model_holds_the_components_and_loads_everywhere(tokenizer, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from transformers_janus import JanusProImagePipeline
    from transformers_janus.shapes.assembly import assemble_shapes_model, save_shapes_model

    vision, vq = tiny_vision(), tiny_vq()
    model, processor = assemble_shapes_model(tokenizer, vision, vq, text_config=TINY_TEXT)
    config = model.config
    assert config.num_image_tokens == 256 and config.image_token_grid == 16
    assert config.text_config.vocab_size == len(tokenizer)
    for name in ("image_token_id", "boi_token_id", "eoi_token_id"):
        assert getattr(config, name) is not None
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image_placeholder>")
    for key, value in vision.state_dict().items():
        assert torch.equal(model.model.vision_model.state_dict()[key], value), key
    for key, value in vq.state_dict().items():
        assert torch.equal(model.model.vq_model.state_dict()[key], value), key

    save_shapes_model(model, processor, tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).num_image_tokens == 256
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    pipe = JanusProImagePipeline.from_pretrained(tmp_path)
    image = pipe("a photo of a red circle", generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 128, 128, 3)


def test_assembled_shared_encoder_model_keeps_its_encoder_through_saving(tokenizer, tmp_path):
    from transformers import AutoModelForImageTextToText

    from transformers_janus.shapes.assembly import assemble_shapes_model, save_shapes_model
    from transformers_janus.shapes.world import random_scene, render

    model, processor = assemble_shapes_model(tokenizer, tiny_vision(), tiny_vq(), text_config=TINY_TEXT,
                                             understanding_encoder="vq")
    save_shapes_model(model, processor, tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert loaded.config.understanding_encoder == "vq"
    image = render(random_scene(np.random.default_rng(0)))
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    features = loaded.model.get_image_features(pixel_values).pooler_output
    codes = loaded.model.encode_image_tokens(pixel_values).flatten(1)
    torch.testing.assert_close(features, loaded.model.gen_aligner(loaded.model.gen_embed(codes)), rtol=0, atol=0)
