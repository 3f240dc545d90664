"""Processor tests: parity with DeepSeek's VLChatProcessor / VLMImageProcessor, batching, errors, round trips."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import transformers_janus  # noqa: F401  (registers the Auto classes)
from transformers_janus import JanusProImageProcessor, JanusProProcessor
from transformers_janus.processing_janus_pro import DEFAULT_SYSTEM_PROMPT


QUESTION = [{"type": "image"}, {"type": "text", "text": "Describe this image in detail."}]


@pytest.fixture(scope="module")
def processor(checkpoint_dir):
    return JanusProProcessor.from_pretrained(checkpoint_dir)


@pytest.fixture(scope="module")
def und_image(fixture_dir):
    return Image.open(fixture_dir / "und_image.png").convert("RGB")


def _random_image(width, height, seed=0, mode="RGB"):
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


# ------------------------------------------------------------------------------------------------------------------
# Golden parity
# ------------------------------------------------------------------------------------------------------------------


def test_chat_template_renders_golden_sft_format(processor, golden_meta):
    messages = [{"role": "user", "content": QUESTION}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == golden_meta["und_sft_format"]


def test_understanding_inputs_match_golden(processor, golden, golden_meta, und_image):
    inputs = processor(text=golden_meta["und_sft_format"], images=und_image)
    assert torch.equal(inputs["input_ids"], golden["und.input_ids"])
    assert torch.equal(inputs["attention_mask"], golden["und.attention_mask"])
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)
    assert inputs["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(inputs["pixel_values"], golden["und.pixel_values"][:, 0], atol=1e-6, rtol=0)  # measured 0; 1e-6: float32 steps of [-1, 1] values
    # the placeholders are where DeepSeek's `images_seq_mask` says
    image_positions = (inputs["input_ids"] == processor.image_token_id).to(torch.uint8)
    assert torch.equal(image_positions, golden["und.images_seq_mask"])


def test_image_processor_matches_golden_exactly(checkpoint_dir, golden, und_image):
    image_processor = JanusProImageProcessor.from_pretrained(checkpoint_dir)
    assert image_processor.image_size == 64
    assert torch.equal(image_processor(und_image)["pixel_values"], golden["und.pixel_values"][:, 0])


def test_chat_template_tokenized_with_embedded_image_matches_golden(processor, golden, fixture_dir):
    """The call `pipeline("image-text-to-text")` makes for chat inputs, with the image as a path in the message."""
    image = {"type": "image", "path": str(fixture_dir / "und_image.png")}
    messages = [{"role": "user", "content": [image, QUESTION[1]]}]
    inputs = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        continue_final_message=False,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={},
    )
    assert torch.equal(inputs["input_ids"], golden["und.input_ids"])
    assert torch.equal(inputs["attention_mask"], golden["und.attention_mask"])
    torch.testing.assert_close(inputs["pixel_values"], golden["und.pixel_values"][:, 0], atol=1e-6, rtol=0)


def test_generation_prompt_matches_golden(processor, golden, golden_meta):
    prompt = processor.build_image_generation_prompt(golden_meta["gen_prompt_text"])
    assert prompt == golden_meta["gen_prompt"]
    inputs = processor.prepare_image_generation_inputs(golden_meta["gen_prompt_text"])
    assert torch.equal(inputs["input_ids"][0], golden["gen.prompt_ids"])


def test_unconditional_ids_match_golden(processor, golden):
    cond = golden["gen.prompt_ids"]
    uncond = processor.get_unconditional_input_ids(cond)
    assert torch.equal(uncond, golden["gen.cfg_input_ids"][1])
    assert torch.equal(uncond, golden["gen.cfg_input_ids"][3])
    assert torch.equal(golden["gen.cfg_input_ids"][0], cond)  # the conditional rows are the prompt itself
    assert processor.get_unconditional_input_ids(cond.tolist()) == golden["gen.cfg_input_ids"][1].tolist()


def test_unconditional_ids_of_left_padded_batch_keep_first_real_token(processor, golden, golden_meta):
    inputs = processor.prepare_image_generation_inputs(["a cat", golden_meta["gen_prompt_text"]])
    uncond = processor.get_unconditional_input_ids(inputs["input_ids"], inputs["attention_mask"])
    # the longer prompt is unpadded and gives the golden row
    assert torch.equal(uncond[1], golden["gen.cfg_input_ids"][1])
    row, mask = uncond[0], inputs["attention_mask"][0]
    first = int(torch.nonzero(mask)[0])
    assert first > 0 and (row[:first] == processor.pad_token_id).all()
    assert row[first] == processor.bos_token_id and row[-1] == processor.boi_token_id
    assert (row[first + 1 : -1] == processor.pad_token_id).all()


def test_generation_preprocessing_matches_golden_vq_input(processor, golden, fixture_dir):
    image = Image.open(fixture_dir / "vq_image.png")
    assert image.size == (84, 64)
    pixel_values = processor.image_processor.preprocess_for_generation(image)["pixel_values"]
    assert pixel_values.shape == (1, 3, 64, 64)
    assert torch.equal(pixel_values, golden["vq.input"])


def test_generation_preprocessing_resizes_short_side_then_crops(processor):
    image = _random_image(128, 203)  # short side 128 -> 64, long side int(64 * 203 / 128) = int(101.5), offset 37 // 2
    expected = np.asarray(image.resize((64, 101), Image.Resampling.BICUBIC).crop((0, 18, 64, 82)), np.float32)
    pixel_values = processor.image_processor.preprocess_for_generation(image, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(pixel_values[0], np.moveaxis(expected / 127.5 - 1, -1, 0))


def test_postprocess_matches_golden_uint8(processor, golden):
    decoded, expected = golden["gen.decoded"], golden["gen.decoded_uint8"]
    images = processor.postprocess(decoded)
    assert len(images) == 2 and images[0].size == (64, 64) and images[0].mode == "RGB"
    # PIL images hold DeepSeek's exact uint8 pixels; "np"/"pt" are floats in [0, 1], as in diffusers.
    np.testing.assert_array_equal(np.stack([np.asarray(image) for image in images]), expected.numpy())
    floats = processor.postprocess(decoded.numpy(), output_type="np")
    assert floats.dtype == np.float32 and floats.shape == tuple(expected.shape)
    np.testing.assert_array_equal((floats * 255).astype(np.uint8), expected.numpy())
    assert torch.equal(processor.postprocess(decoded, output_type="pt"), torch.from_numpy(floats).permute(0, 3, 1, 2))
    assert processor.post_process_multimodal_output(decoded, generation_mode="image")[0].size == (64, 64)
    with pytest.raises(ValueError, match="output_type"):
        processor.postprocess(decoded, output_type="latent")


# ------------------------------------------------------------------------------------------------------------------
# Batching and placeholders
# ------------------------------------------------------------------------------------------------------------------


def test_left_padded_batch_with_zero_and_two_images(processor):
    texts = ["Hello there.", "<image_placeholder>\nA red square.\n<image_placeholder>\nWhat differs?"]
    image_a, image_b = _random_image(40, 30, 1), _random_image(30, 50, 2)
    nested = processor(text=texts, images=[[], [image_a, image_b]])
    flat = processor(text=texts, images=[image_a, image_b])
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(nested[key], flat[key])

    assert nested["pixel_values"].shape == (2, 3, 64, 64)
    n = processor.num_image_tokens
    assert (nested["input_ids"][1] == processor.image_token_id).sum() == 2 * n
    assert (nested["input_ids"][1] == processor.boi_token_id).sum() == 2
    assert (nested["input_ids"][1] == processor.eoi_token_id).sum() == 2

    short = processor(text=texts[0])
    length = short["input_ids"].shape[1]
    assert nested["input_ids"].shape[1] > length
    pad = nested["input_ids"].shape[1] - length
    assert (nested["input_ids"][0, :pad] == processor.pad_token_id).all()
    assert (nested["attention_mask"][0, :pad] == 0).all() and (nested["attention_mask"][0, pad:] == 1).all()
    assert torch.equal(nested["input_ids"][0, pad:], short["input_ids"][0])
    assert nested["input_ids"][0, pad] == processor.bos_token_id
    assert nested["attention_mask"][1].all()

    single = processor(text=texts[1], images=[image_a, image_b])
    assert torch.equal(single["pixel_values"], nested["pixel_values"])
    assert torch.equal(single["input_ids"][0], nested["input_ids"][1])


def test_image_expansion_layout(processor, und_image):
    ids = processor(text="<image_placeholder>", images=und_image)["input_ids"][0].tolist()
    n = processor.num_image_tokens
    image_span = [processor.boi_token_id] + [processor.image_token_id] * n + [processor.eoi_token_id]
    assert ids == [processor.bos_token_id] + image_span


@pytest.mark.parametrize("images", [None, [], [[]]])
def test_text_only_inputs(processor, images):
    inputs = processor(text=["Hello there.", "What color is the ball?"], images=images)
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["attention_mask"][:, -1].all() and not inputs["attention_mask"][0, 0]  # left-padded


def test_more_placeholders_than_images(processor, und_image):
    with pytest.raises(ValueError, match=r"2 `<image_placeholder>` in text 0 but 1 images"):
        processor(text=["<image_placeholder><image_placeholder>"], images=[[und_image]])
    with pytest.raises(ValueError, match=r"2 `<image_placeholder>`.*but 1 images"):
        processor(text="<image_placeholder> and <image_placeholder>", images=und_image)
    with pytest.raises(ValueError, match=r"1 `<image_placeholder>`.*but 0 images"):
        processor(text="<image_placeholder> what is it?")


def test_more_images_than_placeholders(processor, und_image):
    with pytest.raises(ValueError, match=r"0 `<image_placeholder>` in text 1 but 1 images"):
        processor(text=["<image_placeholder>", "no image here"], images=[[und_image], [und_image]])
    with pytest.raises(ValueError, match=r"0 `<image_placeholder>`.*but 1 images"):
        processor(text="no image here", images=und_image)
    with pytest.raises(ValueError, match="mixes images and lists"):
        processor(text=["<image_placeholder>", "<image_placeholder>"], images=[und_image, [und_image]])
    with pytest.raises(ValueError, match="one list of images per text"):
        processor(text=["<image_placeholder>", "x"], images=[[und_image]])


def test_empty_videos_and_audio_are_ignored(processor, golden, golden_meta, und_image):
    for extra in ({"videos": []}, {"audios": []}, {"audio": []}, {"videos": None, "audio": None}):
        inputs = processor(text=golden_meta["und_sft_format"], images=[und_image], **extra)
        assert torch.equal(inputs["input_ids"], golden["und.input_ids"])
    with pytest.raises(ValueError, match="text and images only"):
        processor(text="hi", videos=[np.zeros((2, 8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="audios"):
        processor(text="hi", audios=[np.zeros(16000, np.float32)])


def test_decode_forwards_to_tokenizer(processor, golden, golden_meta):
    ids = golden["gen.prompt_ids"]
    assert processor.decode(ids) == processor.tokenizer.decode(ids)
    assert processor.decode(ids, skip_special_tokens=False).endswith("<|Assistant|>:<begin_of_image>")
    assert processor.batch_decode(ids[None], skip_special_tokens=True) == processor.tokenizer.batch_decode(
        ids[None], skip_special_tokens=True
    )
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values"]


def test_special_token_ids_are_looked_up_by_text(processor):
    tokenizer = processor.tokenizer
    expected = {
        "image_token_id": "<image_placeholder>",
        "boi_token_id": "<begin_of_image>",
        "eoi_token_id": "<end_of_image>",
        "pad_token_id": "<｜▁pad▁｜>",
        "bos_token_id": "<｜begin▁of▁sentence｜>",
        "eos_token_id": "<｜end▁of▁sentence｜>",
    }
    for attribute, text in expected.items():
        assert getattr(processor, attribute) == tokenizer.convert_tokens_to_ids(text)
    assert tokenizer.pad_token_id == processor.pad_token_id and tokenizer.padding_side == "left"


# ------------------------------------------------------------------------------------------------------------------
# Chat template
# ------------------------------------------------------------------------------------------------------------------


def test_chat_template_multi_turn_with_answer(processor):
    eos = "<｜end▁of▁sentence｜>"
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the ball?"}]},
        {"role": "assistant", "content": "The ball is green."},
        {"role": "user", "content": "  And the cat?  "},
    ]
    expected = (
        f"{DEFAULT_SYSTEM_PROMPT}\n\n<|User|>: <image_placeholder>\nWhat color is the ball?\n\n"
        f"<|Assistant|>: The ball is green.{eos}<|User|>: And the cat?\n\n<|Assistant|>:"
    )
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == expected
    assert processor.apply_chat_template(messages[:2]).endswith(f"<|Assistant|>: The ball is green.{eos}")


def test_chat_template_system_prompts(processor):
    user = {"role": "user", "content": "Hi"}
    assert processor.apply_chat_template([{"role": "system", "content": ""}, user], add_generation_prompt=True) == (
        "<|User|>: Hi\n\n<|Assistant|>:"
    )
    custom = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, user]
    assert processor.apply_chat_template(custom, add_generation_prompt=True) == (
        "Be brief.\n\n<|User|>: Hi\n\n<|Assistant|>:"
    )
    assert processor.apply_chat_template([user]).startswith(DEFAULT_SYSTEM_PROMPT + "\n\n<|User|>: Hi")
    # DeepSeek's own role names render the same
    deepseek_roles = [{"role": "<|User|>", "content": "Hi"}, {"role": "<|Assistant|>", "content": ""}]
    expected = processor.apply_chat_template([user], add_generation_prompt=True)
    assert processor.apply_chat_template(deepseek_roles) == expected


def test_chat_template_rejects_unknown_roles(processor):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="got role tool"):
        processor.apply_chat_template([{"role": "tool", "content": "x"}])


def test_assistant_tokens_mask_marks_the_answer_and_eos(processor):
    messages = [{"role": "user", "content": "What color is the ball?"}, {"role": "assistant", "content": "Green."}]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = inputs["input_ids"][0].tolist()
    answer = [token for token, keep in zip(ids, inputs["assistant_masks"][0]) if keep]
    assert processor.decode(answer).strip() == "Green.<｜end▁of▁sentence｜>"


def test_pipeline_text_path_and_post_processing(processor, golden, golden_meta, und_image):
    """The non-chat call of `pipeline("image-text-to-text")` and its decoding of prompt and answer."""
    inputs = processor(images=[und_image], text=golden_meta["und_sft_format"], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], golden["und.input_ids"])
    answer = processor.tokenizer.encode(" The ball", add_special_tokens=False)
    generated = torch.cat([inputs["input_ids"], torch.tensor([answer])], dim=1)
    texts = processor.post_process_image_text_to_text(generated, skip_special_tokens=True)
    prompts = processor.post_process_image_text_to_text(inputs["input_ids"], skip_special_tokens=True)
    assert texts[0][len(prompts[0]) :] == " The ball"


# ------------------------------------------------------------------------------------------------------------------
# Image inputs
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "CMYK", "LA"])
def test_non_rgb_images_are_converted_with_pil(processor, mode):
    image = _random_image(50, 30, seed=3, mode=mode)
    pixel_values = processor.image_processor(image)["pixel_values"]
    assert pixel_values.shape == (1, 3, 64, 64)
    assert torch.equal(pixel_values, processor.image_processor(image.convert("RGB"))["pixel_values"])


def test_arrays_tensors_and_paths_match_pil(processor, und_image, fixture_dir):
    image_processor = processor.image_processor
    reference = image_processor(und_image)["pixel_values"]
    array = np.array(und_image)
    assert torch.equal(image_processor(array)["pixel_values"], reference)
    assert torch.equal(image_processor(torch.from_numpy(array).permute(2, 0, 1))["pixel_values"], reference)
    assert torch.equal(image_processor(array.astype(np.float32) / 255)["pixel_values"], reference)
    assert torch.equal(image_processor(str(fixture_dir / "und_image.png"))["pixel_values"], reference)
    batch = image_processor([und_image, _random_image(10, 90)])["pixel_values"]
    assert batch.shape == (2, 3, 64, 64) and torch.equal(batch[:1], reference)


def test_tiny_and_thin_images_respect_min_size(processor):
    image_processor = processor.image_processor
    assert image_processor(Image.new("RGB", (1, 1), (255, 0, 0)))["pixel_values"].shape == (1, 3, 64, 64)
    resized = image_processor.resize(np.zeros((3, 1, 1000), np.uint8), size=image_processor.size, min_size=14)
    assert resized.shape == (3, 14, 64)
    # DeepSeek truncates: 62 / 100 * 64 = 39.68 -> 39 (rounding would give 40)
    assert image_processor.resize(np.zeros((3, 62, 100), np.uint8), size=image_processor.size).shape == (3, 39, 64)
    # a thin image is pasted centred on the grey canvas
    pixel_values = image_processor(Image.new("RGB", (1000, 1), (255, 255, 255)))["pixel_values"][0]
    rows = (pixel_values[0] > 0.99).all(dim=1).nonzero().flatten().tolist()
    assert rows == list(range(25, 39))  # (64 - 14) // 2 = 25
    assert pixel_values[0, 0, 0].item() == pytest.approx(127 / 255 * 2 - 1)


def test_zero_size_images_are_refused(processor):
    with pytest.raises(ValueError, match=r"empty image of 0x5 pixels"):
        processor.image_processor(Image.new("RGB", (0, 5)))
    with pytest.raises(ValueError, match=r"empty image of 7x0 pixels"):
        processor.image_processor(np.zeros((0, 7, 3), np.uint8))


def test_huge_images_are_refused_with_size_and_fix(processor):
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # a view: no memory allocated
    with pytest.raises(ValueError, match=r"20000x20000 = 400000000 pixels.*Downscale"):
        processor.image_processor(huge)
    with pytest.raises(ValueError, match="max_image_pixels"):
        processor.image_processor.preprocess_for_generation(torch.zeros(1, 1, 1).expand(3, 20000, 20000))


def test_unsupported_images_are_refused(processor):
    with pytest.raises(ValueError, match="mode 'I;16'"):
        processor.image_processor(Image.new("I;16", (8, 8), 1000))
    with pytest.raises(ValueError, match=r"0\.\.255.*uint16"):
        processor.image_processor(np.full((8, 8, 3), 1000, np.uint16))
    with pytest.raises(ValueError, match="square"):
        JanusProImageProcessor(size={"height": 64, "width": 32})


# ------------------------------------------------------------------------------------------------------------------
# Loading and saving
# ------------------------------------------------------------------------------------------------------------------


def test_auto_classes_load_deepseek_files(checkpoint_dir):
    from transformers import AutoImageProcessor, AutoProcessor

    assert type(AutoProcessor.from_pretrained(checkpoint_dir)) is JanusProProcessor
    image_processor = AutoImageProcessor.from_pretrained(checkpoint_dir)
    assert type(image_processor) is JanusProImageProcessor and image_processor.image_size == 64


def test_save_and_reload_round_trip(processor, tmp_path, und_image, golden_meta):
    from transformers import AutoImageProcessor, AutoProcessor

    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "JanusProProcessor"
    assert config["image_processor"]["image_processor_type"] == "JanusProImageProcessor"
    assert config["num_image_tokens"] == processor.num_image_tokens
    assert (tmp_path / "chat_template.jinja").read_text() == processor.chat_template

    texts = [golden_meta["und_sft_format"], "Hello there."]
    expected = processor(text=texts, images=[[und_image], []])
    for reloaded in (JanusProProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(reloaded) is JanusProProcessor
        assert reloaded.chat_template == processor.chat_template
        outputs = reloaded(text=texts, images=[[und_image], []])
        assert set(outputs) == set(expected)
        for key in expected:
            assert torch.equal(outputs[key], expected[key])
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is JanusProImageProcessor


def test_image_text_to_text_pipeline_with_chat_input(checkpoint_dir, golden_meta, und_image):
    """End to end through `pipeline("image-text-to-text")` on the tiny checkpoint: the greedy answer is DeepSeek's."""
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(checkpoint_dir))
    assert type(pipe.processor) is JanusProProcessor
    messages = [{"role": "user", "content": [{"type": "image", "image": und_image}, QUESTION[1]]}]
    output = pipe(text=messages, max_new_tokens=12, generate_kwargs={"do_sample": False})
    assert output[0]["generated_text"][-1] == {"role": "assistant", "content": golden_meta["und_greedy_text"]}


def test_image_generation_prompt_with_an_image(processor, golden_meta):
    text = golden_meta["gen_prompt_text"]
    prompts = processor.build_image_generation_prompt([text, text], with_image=[True, False])
    assert prompts[0] == f"<|User|>: <image_placeholder>\n{text}\n\n<|Assistant|>:<begin_of_image>"
    assert prompts[1] == golden_meta["gen_prompt"]


def test_loading_deepseeks_tokenizer_prints_no_warning(checkpoint_dir):
    """DeepSeek's tokenizer_config.json names LlamaTokenizerFast for a byte-level tokenizer.json: read it silently."""
    import subprocess
    import sys

    code = (
        "from transformers_janus import JanusProProcessor; "
        f"processor = JanusProProcessor.from_pretrained({str(checkpoint_dir)!r}); "
        "print(type(processor.tokenizer).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TokenizersBackend"
    assert "tokenizer_class" not in result.stderr and "ByteLevel" not in result.stderr, result.stderr


@pytest.mark.parametrize("text, message", [([], "non-empty list"), (["a", None], r"entries \[1\] are \['NoneType'\]")])
def test_empty_or_none_text_is_refused_by_name(processor, text, message):
    with pytest.raises(ValueError, match=message):
        processor(text=text)
