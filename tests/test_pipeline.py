"""JanusProImagePipeline: the diffusers face of text(+image)-to-image generation."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from transformers_janus import JanusProImagePipeline

PROMPT = "a red square on the left of a blue circle"


@pytest.fixture(scope="module")
def pipe(checkpoint_dir):
    pipeline = JanusProImagePipeline.from_pretrained(checkpoint_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def picture(fixture_dir):
    return PIL.Image.open(fixture_dir / "und_image.png").convert("RGB")


def seeded(*seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def test_greedy_images_match_reference(pipe, golden, golden_meta):
    tokens = pipe(golden_meta["gen_prompt_text"], num_images_per_prompt=2, top_k=1, output_type="latent").images
    assert tokens.tolist() == golden["gen.greedy_image_tokens"].tolist()
    images = pipe(golden_meta["gen_prompt_text"], num_images_per_prompt=2, top_k=1).images
    pixels = np.stack([np.asarray(image) for image in images]).astype(int)
    expected = golden["gen.decoded_uint8"].numpy().astype(int)
    # Decoded floats agree within 2e-5; truncation to uint8 flips a handful of pixels sitting on a boundary.
    assert np.abs(pixels - expected).max() <= 1
    assert (pixels != expected).mean() < 1e-3


def test_same_seed_same_images_other_seed_other_images(pipe):
    first = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent").images
    again = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent").images
    other = pipe(PROMPT, generator=torch.Generator().manual_seed(1), output_type="latent").images
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_batch_equals_single_runs_with_per_image_generators(pipe):
    prompts = [PROMPT, "a cat"]
    batch = pipe(prompts, num_images_per_prompt=2, generator=seeded(1, 2, 3, 4), output_type="latent").images
    assert batch.shape == (4, 16)
    for index, prompt in enumerate(prompts):
        alone = pipe(prompt, num_images_per_prompt=2, generator=seeded(2 * index + 1, 2 * index + 2), output_type="latent")
        assert torch.equal(alone.images, batch[2 * index : 2 * index + 2])


def test_output_types_and_shapes(pipe):
    prompts = [PROMPT, "a cat"]
    pil = pipe(prompts, generator=seeded(0, 1)).images
    assert isinstance(pil, list) and len(pil) == 2 and all(isinstance(i, PIL.Image.Image) and i.size == (64, 64) for i in pil)
    array = pipe(prompts, generator=seeded(0, 1), output_type="np").images
    assert array.shape == (2, 64, 64, 3) and array.dtype == np.float32 and 0 <= array.min() and array.max() <= 1
    tensor = pipe(prompts, generator=seeded(0, 1), output_type="pt").images
    assert tensor.shape == (2, 3, 64, 64) and 0 <= tensor.min() and tensor.max() <= 1
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array)
    np.testing.assert_allclose(np.asarray(pil[0]) / 255, array[0], atol=1 / 255 + 1e-6)
    output = pipe(PROMPT, return_dict=False, output_type="latent")
    assert isinstance(output, tuple) and output[0].shape == (1, 16)
    assert isinstance(pipe(PROMPT, output_type="latent"), ImagePipelineOutput)


def test_negative_prompt_replaces_the_unconditional_pad_rows(pipe, monkeypatch):
    seen = {}
    original = pipe.model.generate_images

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(pipe.model, "generate_images", spy)
    pipe(PROMPT, num_images_per_prompt=2, negative_prompt="blurry", output_type="latent")
    negative_texts = pipe.processor.batch_decode(seen["negative_input_ids"], skip_special_tokens=False)
    assert len(negative_texts) == 2 and all("<|User|>: blurry" in text for text in negative_texts)
    assert all(text.endswith("<begin_of_image>") for text in negative_texts)
    seen.clear()
    pipe(PROMPT, output_type="latent")
    assert "negative_input_ids" not in seen


def test_guidance_scale_one_runs_half_the_rows(pipe):
    batch_sizes = []
    handle = pipe.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    try:
        pipe(PROMPT, num_images_per_prompt=3, guidance_scale=1.0, output_type="latent")
        unguided = set(batch_sizes)
        batch_sizes.clear()
        pipe(PROMPT, num_images_per_prompt=3, guidance_scale=5.0, output_type="latent")
    finally:
        handle.remove()
    assert unguided == {3} and set(batch_sizes) == {6}


def test_step_callback_and_progress(pipe):
    steps = []

    def callback(pipeline, step, timestep, callback_kwargs):
        steps.append((step, tuple(callback_kwargs["image_tokens"].shape)))
        return {}

    pipe(PROMPT, num_images_per_prompt=2, callback_on_step_end=callback, output_type="latent")
    assert steps == [(step, (2, step + 1)) for step in range(16)]


def test_image_conditioning_changes_tokens_and_batches_match_single_runs(pipe, picture):
    without = pipe(PROMPT, generator=seeded(5), output_type="latent").images
    with_image = pipe(PROMPT, image=picture, generator=seeded(5), output_type="latent").images
    assert not torch.equal(without, with_image)
    batch = pipe([PROMPT, PROMPT], image=[picture, None], generator=seeded(5, 5), output_type="latent").images
    assert torch.equal(batch[0], with_image[0]) and torch.equal(batch[1], without[0])
    seeing = pipe(PROMPT, image=picture, unconditional_image=True, generator=seeded(5), output_type="latent").images
    assert not torch.equal(seeing, with_image)


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_janus_pro", "JanusProImagePipeline"]
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "pipeline_janus_pro.py").exists()
    reloaded = JanusProImagePipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert reloaded.model.dtype == torch.bfloat16
    reloaded = JanusProImagePipeline.from_pretrained(tmp_path)
    generic = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(generic).__name__ == "JanusProImagePipeline"
    expected = pipe(PROMPT, generator=seeded(3), output_type="latent").images
    for loaded in (reloaded, generic):
        loaded.set_progress_bar_config(disable=True)
        assert torch.equal(loaded(PROMPT, generator=seeded(3), output_type="latent").images, expected)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": []}, "non-empty list"),
        ({"prompt": PROMPT, "num_images_per_prompt": 0}, "`num_images_per_prompt` must be a positive integer"),
        ({"prompt": PROMPT, "guidance_scale": -1.0}, "`guidance_scale` must be >= 0"),
        ({"prompt": [PROMPT, PROMPT], "generator": seeded(1, 2, 3)}, "generators of length 3, but requested 2 images"),
        ({"prompt": PROMPT, "temperature": 0.0}, "`temperature` must be > 0"),
        ({"prompt": PROMPT, "output_type": "jpeg"}, "`output_type` must be one of"),
        ({"prompt": [PROMPT, PROMPT], "negative_prompt": ["a", "b", "c"]}, "`negative_prompt` has 3 entries for 2"),
        ({"prompt": PROMPT + " and more" * 400}, "over the model's context of 1024 tokens"),
    ],
)
def test_bad_input_is_refused_clearly(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)
