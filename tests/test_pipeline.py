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
    # diffusers' names for an out-of-tree pipeline class (`<module in this folder>.py`) and custom components
    # (`<component folder>/<module>.py`); test_remote_code.py loads the folder without the package.
    assert index["_class_name"] == ["pipeline", "JanusProImagePipeline"]
    assert index["model"] == ["modeling_janus_pro", "JanusProForConditionalGeneration"]
    assert index["processor"] == ["processing_janus_pro", "JanusProProcessor"]
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "pipeline_janus_pro.py").exists()
    assert (tmp_path / "pipeline.py").exists() and (tmp_path / "model" / "modeling_janus_pro.py").exists()
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


def test_callback_timestep_counts_the_image_tokens_left(pipe):
    seen = []
    pipe(PROMPT, callback_on_step_end=lambda p, step, timestep, kwargs: seen.append((step, timestep)), output_type="latent")
    assert seen == [(step, 15 - step) for step in range(16)]


def test_callback_can_replace_the_image_tokens(pipe):
    natural = pipe(PROMPT, num_images_per_prompt=2, top_k=1, output_type="latent").images

    def force_first(value):
        def callback(pipeline, step, timestep, callback_kwargs):
            tokens = callback_kwargs["image_tokens"]
            if step == 0:
                tokens = tokens.clone()
                tokens[:, 0] = value
                return {"image_tokens": tokens}
            return {}

        return callback

    same = pipe(PROMPT, num_images_per_prompt=2, top_k=1, callback_on_step_end=force_first(natural[:, 0]), output_type="latent")
    assert torch.equal(same.images, natural)
    other = (natural[:, 0] + 1) % pipe.model.config.vq_config.num_vq_embeddings
    embedded = []  # the image tokens each decoding step embeds, i.e. reads
    handle = pipe.model.model.gen_embed.register_forward_pre_hook(lambda module, args: embedded.append(args[0].clone()))
    try:
        forced = pipe(PROMPT, num_images_per_prompt=2, top_k=1, callback_on_step_end=force_first(other), output_type="latent")
    finally:
        handle.remove()
    assert torch.equal(forced.images[:, 0], other)
    # The step after the replacement reads the replaced tokens, not the drawn ones.
    assert set(embedded[0].flatten().tolist()) == set(other.tolist())

    constant = pipe(
        PROMPT,
        top_k=1,
        callback_on_step_end=lambda p, step, t, kwargs: {"image_tokens": torch.full_like(kwargs["image_tokens"], 7)},
        output_type="latent",
    ).images
    assert constant.tolist() == [[7] * 16]


def test_callback_returning_unusable_tokens_is_refused(pipe):
    with pytest.raises(ValueError, match=r"`callback_on_step_end` returned `image_tokens`.*shape \(1, 1\)"):
        pipe(
            PROMPT,
            callback_on_step_end=lambda p, step, t, kwargs: {"image_tokens": kwargs["image_tokens"][:, :0]},
            output_type="latent",
        )


def test_interrupt_returns_the_tokens_so_far_and_refuses_pixels(pipe):
    def stop_after_five(pipeline, step, timestep, callback_kwargs):
        if step == 4:
            pipeline._interrupt = True
        return {}

    full = pipe(PROMPT, num_images_per_prompt=2, generator=seeded(1, 2), output_type="latent").images
    early = pipe(
        PROMPT, num_images_per_prompt=2, generator=seeded(1, 2), callback_on_step_end=stop_after_five, output_type="latent"
    ).images
    assert early.shape == (2, 5) and torch.equal(early, full[:, :5])
    with pytest.raises(ValueError, match=r"interrupted after 5 of 16 image tokens.*output_type=\"latent\""):
        pipe(PROMPT, callback_on_step_end=stop_after_five)
    # The flag is reset by the next call.
    assert pipe(PROMPT, output_type="latent").images.shape == (1, 16)


def test_np_and_pt_mean_floats_in_the_unit_range_in_pipeline_and_processor(pipe):
    tokens = pipe(PROMPT, generator=seeded(0), output_type="latent").images
    decoded = pipe.model.decode_image_tokens(tokens)
    array = pipe(PROMPT, generator=seeded(0), output_type="np").images
    from_processor = pipe.processor.postprocess(decoded, output_type="np")
    assert from_processor.dtype == array.dtype == np.float32
    np.testing.assert_array_equal(from_processor, array)
    assert 0 <= array.min() and array.max() <= 1 and len(np.unique(array)) > 256  # not uint8 steps
    tensor = pipe.processor.postprocess(decoded, output_type="pt")
    assert tensor.dtype == torch.float32 and torch.equal(tensor, pipe(PROMPT, generator=seeded(0), output_type="pt").images)


def test_too_long_prompt_is_refused_before_any_decoding(pipe):
    calls = []
    handle = pipe.model.model.language_model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"model's context of 1024 tokens[\s\S]*Shorten the prompt"):
            pipe(PROMPT + " and more" * 400, output_type="latent")
    finally:
        handle.remove()
    assert calls == []


def _fresh_pipeline(checkpoint_dir, processor):
    from transformers_janus import JanusProForConditionalGeneration

    return JanusProImagePipeline(model=JanusProForConditionalGeneration.from_pretrained(checkpoint_dir).eval(), processor=processor)


def test_save_refuses_a_peft_wrapped_model_and_says_how(pipe, checkpoint_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    pipeline = _fresh_pipeline(checkpoint_dir, pipe.processor)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.model = get_peft_model(pipeline.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with pytest.raises(ValueError, match=r"PEFT `PeftModel`.*merge_and_unload\(\)"):
        pipeline.save_pretrained(tmp_path / "peft")
    assert not (tmp_path / "peft").exists()

    # What the message says works: the merged weights save and load back.
    expected = pipeline(PROMPT, generator=seeded(3), output_type="latent").images
    pipeline.model = pipeline.model.merge_and_unload()
    pipeline.save_pretrained(tmp_path / "merged")
    reloaded = JanusProImagePipeline.from_pretrained(tmp_path / "merged")
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(reloaded(PROMPT, generator=seeded(3), output_type="latent").images, expected)



def test_save_refuses_a_model_with_integrated_peft_adapters(pipe, checkpoint_dir, tmp_path):
    from peft import LoraConfig

    integrated = _fresh_pipeline(checkpoint_dir, pipe.processor)
    try:  # transformers' PEFT integration needs a newer peft than some environments have
        integrated.model.add_adapter(LoraConfig(r=4, target_modules=["q_proj"]))
    except ValueError as error:
        pytest.skip(str(error))
    with pytest.raises(ValueError, match=r"carries PEFT adapters.*merge_and_unload"):
        integrated.save_pretrained(tmp_path / "integrated")
    assert not (tmp_path / "integrated").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": []}, "non-empty list"),
        ({"prompt": PROMPT, "num_images_per_prompt": 0}, "`num_images_per_prompt` must be a positive integer"),
        ({"prompt": PROMPT, "guidance_scale": -1.0}, "`guidance_scale` must be >= 0"),
        ({"prompt": [PROMPT, PROMPT], "generator": seeded(1, 2, 3)}, "generators of length 3, but requested 2 images"),
        ({"prompt": PROMPT, "temperature": 0.0}, "`temperature` must be > 0"),
        ({"prompt": PROMPT, "temperature": float("nan")}, "`temperature` must be > 0"),
        ({"prompt": PROMPT, "guidance_scale": float("nan")}, "`guidance_scale` must be >= 0 and finite"),
        ({"prompt": PROMPT, "guidance_scale": float("inf")}, "`guidance_scale` must be >= 0 and finite"),
        ({"prompt": PROMPT, "height": 512}, r"`height=512`: the image size is fixed by the checkpoint.* 64x64 images"),
        ({"prompt": PROMPT, "width": 32}, r"`width=32`: the image size is fixed by the checkpoint"),
        ({"prompt": PROMPT, "num_inference_steps": 50}, "`num_inference_steps=50`: Janus-Pro has no denoising steps"),
        ({"prompt": PROMPT, "output_type": "jpeg"}, "`output_type` must be one of"),
        ({"prompt": [PROMPT, PROMPT], "negative_prompt": ["a", "b", "c"]}, "`negative_prompt` has 3 entries for 2"),
    ],
)
def test_bad_input_is_refused_clearly(pipe, kwargs, message):
    steps = []
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs, callback_on_step_end=lambda *args: steps.append(1))
    assert steps == []  # refused before any decoding


def test_the_checkpoints_own_size_is_accepted(pipe):
    expected = pipe(PROMPT, generator=seeded(0), output_type="latent").images
    sized = pipe(PROMPT, height=64, width=64, generator=seeded(0), output_type="latent").images
    assert torch.equal(sized, expected)


def test_builtin_janus_folder_loads_converted_on_the_fly(pipe, checkpoint_dir, tmp_path):
    from transformers_janus.conversion import convert_janus_pro_to_janus

    convert_janus_pro_to_janus(checkpoint_dir, tmp_path / "janus")
    assert json.loads((tmp_path / "janus" / "config.json").read_text())["model_type"] == "janus"
    converted = JanusProImagePipeline.from_pretrained(tmp_path / "janus")
    converted.set_progress_bar_config(disable=True)
    assert type(converted.model) is type(pipe.model) and type(converted.processor) is type(pipe.processor)
    expected = pipe(PROMPT, num_images_per_prompt=2, top_k=1, output_type="latent").images
    assert torch.equal(converted(PROMPT, num_images_per_prompt=2, top_k=1, output_type="latent").images, expected)
