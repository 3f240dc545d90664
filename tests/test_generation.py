"""Text generation about images through GenerationMixin: batches, sampling, streaming, and bad inputs."""

import pytest
import torch
from transformers import AutoTokenizer, TextStreamer

NEW_TOKENS = 10


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dir):
    return AutoTokenizer.from_pretrained(checkpoint_dir)


@pytest.fixture(scope="module")
def text_only_ids(tokenizer):
    return torch.tensor(tokenizer("<|User|>: What color is the ball?\n\n<|Assistant|>:").input_ids)


def left_pad(sequences, pad_token_id):
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, length - len(sequence) :] = sequence
        attention_mask[row, length - len(sequence) :] = 1
    return input_ids, attention_mask


def greedy(model, **inputs):
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return output[:, inputs["input_ids"].shape[1] :]


def test_left_padded_batch_answers_as_each_alone(model, golden, text_only_ids, tokenizer):
    image_ids, pixel_values = golden["und.input_ids"][0], golden["und.pixel_values"][:, 0]
    alone = [
        greedy(model, input_ids=image_ids[None], pixel_values=pixel_values)[0],
        greedy(model, input_ids=text_only_ids[None])[0],
    ]
    for order in ([0, 1], [1, 0]):
        sequences = [[image_ids, text_only_ids][i] for i in order]
        input_ids, attention_mask = left_pad(sequences, tokenizer.pad_token_id)
        batch = greedy(model, input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        for row, i in enumerate(order):
            assert batch[row].tolist() == alone[i].tolist()
        # the image row is the golden conversation: DeepSeek's answer, padded or not
        assert batch[order.index(0)].tolist() == golden["und.greedy_new_tokens"].tolist()[:NEW_TOKENS]
    assert alone[0].tolist() == golden["und.greedy_new_tokens"].tolist()[:NEW_TOKENS]


def test_batch_with_different_image_counts(model, golden, tokenizer):
    """Row 0 holds two images, row 1 one: features are consumed in order, row by row."""
    image_ids, pixel_values = golden["und.input_ids"][0], golden["und.pixel_values"][:, 0]
    flipped = pixel_values.flip(-1)
    two_images = torch.cat([image_ids[:-2], image_ids[57:-2], image_ids[-2:]])  # the image block twice
    assert int((two_images == model.config.image_token_id).sum()) == 2 * model.config.num_image_tokens
    alone = [
        greedy(model, input_ids=two_images[None], pixel_values=torch.cat([pixel_values, flipped]))[0],
        greedy(model, input_ids=image_ids[None], pixel_values=flipped)[0],
    ]
    input_ids, attention_mask = left_pad([two_images, image_ids], tokenizer.pad_token_id)
    batch = greedy(
        model, input_ids=input_ids, attention_mask=attention_mask, pixel_values=torch.cat([pixel_values, flipped, flipped])
    )
    assert batch[0].tolist() == alone[0].tolist() and batch[1].tolist() == alone[1].tolist()


def test_sampling_is_reproducible_with_a_seed(model, golden):
    inputs = {"input_ids": golden["und.input_ids"], "pixel_values": golden["und.pixel_values"][:, 0]}
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        with torch.no_grad():
            outputs.append(model.generate(**inputs, max_new_tokens=8, do_sample=True, temperature=1.5, top_k=50))
    assert torch.equal(outputs[0], outputs[1])


def test_streaming_prints_the_greedy_answer(model, golden, tokenizer, capsys):
    inputs = {"input_ids": golden["und.input_ids"], "pixel_values": golden["und.pixel_values"][:, 0]}
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=12, do_sample=False, streamer=streamer)
    expected = tokenizer.decode(golden["und.greedy_new_tokens"], skip_special_tokens=True)
    assert capsys.readouterr().out.strip() == expected.strip()


def test_placeholders_without_images_are_refused(model, golden):
    # `generate` (what a user calls) refuses; the forward embeds the placeholders as text, as transformers' assisted
    # decoding needs when its assistant runs the prompt without the images (issue 8, cause A of the common tests).
    with pytest.raises(ValueError, match=r"16 `<image_placeholder>` tokens but no `pixel_values`"):
        model.generate(input_ids=golden["und.input_ids"], max_new_tokens=1)
    with pytest.raises(ValueError, match=r"16 `<image_placeholder>` tokens but no `pixel_values`"):
        model.generate(golden["und.input_ids"], max_new_tokens=1)
    with torch.no_grad():
        logits = model(input_ids=golden["und.input_ids"]).logits
        embeds = model.get_input_embeddings()(golden["und.input_ids"])
        expected = model(inputs_embeds=embeds).logits
    torch.testing.assert_close(logits, expected, atol=0, rtol=0)


def test_images_without_placeholders_are_refused(model, golden, text_only_ids):
    with pytest.raises(ValueError, match=r"holds 0 `<image_placeholder>` tokens but 1 image\(s\)"):
        model(input_ids=text_only_ids[None], pixel_values=golden["und.pixel_values"][:, 0])


def test_more_images_than_placeholders_are_refused(model, golden):
    pixel_values = golden["und.pixel_values"][:, 0]
    with pytest.raises(ValueError, match=r"16 `<image_placeholder>` tokens but 2 image\(s\)"):
        model(input_ids=golden["und.input_ids"], pixel_values=torch.cat([pixel_values, pixel_values]))


def test_wrong_pixel_shape_is_refused(model, golden):
    with pytest.raises(ValueError, match=r"`pixel_values` must be \[num_images, 3, 64, 64\]"):
        model(input_ids=golden["und.input_ids"], pixel_values=torch.zeros(1, 3, 32, 32))


def test_out_of_range_token_ids_are_refused(model):
    with pytest.raises(ValueError, match="Out-of-range token ids"):
        model(input_ids=torch.tensor([[0, model.config.text_config.vocab_size]]))
    with pytest.raises(ValueError, match="Out-of-range image token ids"):
        model.decode_image_tokens(torch.full((1, 16), model.config.vq_config.num_vq_embeddings))


def test_prompt_longer_than_the_context_is_refused(model):
    # `generate` refuses before any work; the forward runs on, as Llama's does (transformers' common tests run
    # inputs 1.5x `max_position_embeddings` through the base model).
    too_long = torch.zeros(1, model.config.text_config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"more than the model's context of 1024 tokens"):
        model.generate(input_ids=too_long, max_new_tokens=1)
    fits = too_long[:, :-2]
    with pytest.raises(ValueError, match=r"generation may reach 1027, more than the model's context of 1024 tokens"):
        model.generate(input_ids=fits, max_new_tokens=4)


def test_processor_batch_of_conversations_answers_as_each_alone(model, checkpoint_dir, fixture_dir, golden):
    """The harness path: chat template per conversation, one processor call for the batch, one `generate`."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint_dir)
    image = Image.open(fixture_dir / "und_image.png")
    conversations = [
        [{"role": "user", "content": [{"type": "text", "text": "Write a haiku."}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare them."}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image in detail."}]}],
    ]
    images = [[], [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], [image]]
    prompts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    batch = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    together = greedy(model, **batch)
    for prompt, prompt_images, answer in zip(prompts, images, together):
        alone_inputs = processor(text=[prompt], images=[prompt_images], return_tensors="pt")
        assert greedy(model, **alone_inputs)[0].tolist() == answer.tolist()
    # the last conversation is the golden one (default system prompt, the fixture image): DeepSeek's answer
    assert together[2].tolist() == golden["und.greedy_new_tokens"].tolist()[:NEW_TOKENS]


def test_image_text_to_text_pipeline_greedy_tokens_match_reference(model, checkpoint_dir, fixture_dir, golden):
    from PIL import Image
    from transformers import AutoProcessor, pipeline

    chat = pipeline("image-text-to-text", model=model, processor=AutoProcessor.from_pretrained(checkpoint_dir))
    image = Image.open(fixture_dir / "und_image.png")
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Describe this image in detail."}]}]
    output = chat(text=messages, max_new_tokens=12, return_tensors=True)
    token_ids = output[0]["generated_token_ids"]
    prompt_length = golden["und.input_ids"].shape[1]
    assert token_ids[:prompt_length].tolist() == golden["und.input_ids"][0].tolist()
    assert token_ids[prompt_length:].tolist() == golden["und.greedy_new_tokens"].tolist()


def test_empty_prompt_is_refused_before_any_work(model):
    with pytest.raises(ValueError, match=r"at least one token \(BOS\), got shape \[1, 0\]"):
        model.generate(input_ids=torch.empty(1, 0, dtype=torch.long), max_new_tokens=1)


def test_rope_scaling_lifts_the_context_check(checkpoint_dir):
    """With RoPE scaling configured the context extends past `max_position_embeddings` (cause B of the common tests)."""
    from transformers_janus import JanusProForConditionalGeneration

    model = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir).eval()
    long_ids = torch.ones(1, model.config.text_config.max_position_embeddings - 2, dtype=torch.long)
    with pytest.raises(ValueError, match="more than the model's context"):
        model.generate(input_ids=long_ids, max_new_tokens=4, do_sample=False)
    model.config.text_config.rope_parameters = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    with torch.no_grad():
        output = model.generate(input_ids=long_ids, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == long_ids.shape[1] + 4
