"""
`understanding_encoder="vq"`: the single shared encoder of the paper's ablation, where understanding reads the image's
VQ codes through the generation embedding and adaptor. Checked on the fixture's weights and its golden VQ codes.
"""

import pytest
import torch


@pytest.fixture(scope="module")
def shared_model(model):
    """The fixture's weights with understanding switched to the VQ codes."""
    from transformers_janus import JanusProConfig, JanusProForConditionalGeneration

    config = JanusProConfig.from_dict({**model.config.to_dict(), "understanding_encoder": "vq"})
    shared = JanusProForConditionalGeneration(config).eval()
    shared.load_state_dict(model.state_dict())
    return shared


def test_unknown_understanding_encoder_is_refused_with_the_choices():
    from huggingface_hub.errors import StrictDataclassClassValidationError

    from transformers_janus import JanusProConfig

    with pytest.raises(StrictDataclassClassValidationError, match=r"understanding_encoder.*\['siglip', 'vq'\].*'clip'"):
        JanusProConfig(understanding_encoder="clip")


def test_features_are_the_golden_vq_codes_through_the_generation_adaptor(shared_model, golden):
    pixel_values = golden["vq.input"]
    features = shared_model.model.get_image_features(pixel_values)
    codes = golden["vq.codes"].reshape(1, -1)
    expected = shared_model.model.gen_aligner(shared_model.model.gen_embed(codes))
    torch.testing.assert_close(features.pooler_output, expected, rtol=0, atol=0)
    torch.testing.assert_close(features.last_hidden_state, shared_model.model.gen_embed(codes), rtol=0, atol=0)


def test_siglip_is_not_read_and_understanding_differs_from_the_decoupled_model(model, shared_model, golden):
    pixel_values = golden["und.pixel_values"][:, 0]
    decoupled = model.model.get_image_features(pixel_values).pooler_output
    shared = shared_model.model.get_image_features(pixel_values).pooler_output
    assert decoupled.shape == shared.shape
    assert not torch.allclose(decoupled, shared)
    with torch.no_grad():
        for parameter in shared_model.model.vision_model.parameters():
            parameter.add_(1.0)
        try:
            perturbed = shared_model.model.get_image_features(pixel_values).pooler_output
        finally:
            for parameter in shared_model.model.vision_model.parameters():
                parameter.sub_(1.0)
    torch.testing.assert_close(perturbed, shared, rtol=0, atol=0)


def test_understanding_loss_trains_the_generation_embedding_and_adaptor_only(shared_model, golden):
    input_ids = golden["und.input_ids"]
    shared_model.zero_grad()
    output = shared_model(
        input_ids=input_ids,
        attention_mask=golden["und.attention_mask"],
        pixel_values=golden["und.pixel_values"][:, 0],
        labels=input_ids,
    )
    output.loss.backward()
    grads = {name: parameter.grad for name, parameter in shared_model.named_parameters()}
    shared_model.zero_grad(set_to_none=True)
    assert grads["model.gen_embed.weight"] is not None and grads["model.gen_embed.weight"].abs().sum() > 0
    assert all(grads[name] is not None for name in grads if name.startswith("model.gen_aligner."))
    assert all(grads[name] is None for name in grads if name.startswith(("model.vision_model.", "model.aligner.")))
    assert all(grads[name] is None for name in grads if name.startswith("model.vq_model."))


def test_save_and_load_keep_the_shared_encoder(shared_model, golden, tmp_path):
    from transformers_janus import JanusProForConditionalGeneration

    shared_model.save_pretrained(tmp_path)
    reloaded = JanusProForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.config.understanding_encoder == "vq"
    pixel_values = golden["und.pixel_values"][:, 0]
    torch.testing.assert_close(
        reloaded.model.get_image_features(pixel_values).pooler_output,
        shared_model.model.get_image_features(pixel_values).pooler_output,
        rtol=0,
        atol=0,
    )


def test_conversion_to_the_builtin_format_refuses_the_shared_encoder(shared_model):
    from transformers_janus.conversion.config import janus_pro_config_to_janus

    with pytest.raises(ValueError, match="understanding_encoder"):
        janus_pro_config_to_janus(shared_model.config)


def test_the_shared_encoder_learns_to_tell_two_images_apart_by_their_codes(model, checkpoint_dir, fixture_dir):
    """Same question, one answer per image: only the VQ codes can tell the two prompts apart, and they must."""
    from PIL import Image

    from transformers_janus import JanusProConfig, JanusProForConditionalGeneration, JanusProProcessor

    processor = JanusProProcessor.from_pretrained(checkpoint_dir)
    config = JanusProConfig.from_dict({**model.config.to_dict(), "understanding_encoder": "vq"})
    torch.manual_seed(0)
    shared = JanusProForConditionalGeneration(config)
    shared.load_state_dict(model.state_dict())
    question = [{"role": "user", "content": "<image_placeholder>\nWhat is in the picture?"}]
    prompt = processor.apply_chat_template(question, add_generation_prompt=True)
    samples = []
    for name, answer in (("und_image.png", " Red."), ("vq_image.png", " Green.")):
        inputs = processor(text=prompt, images=[Image.open(fixture_dir / name)], return_tensors="pt")
        answer_ids = processor.tokenizer(answer, add_special_tokens=False, return_tensors="pt").input_ids
        input_ids = torch.cat([inputs["input_ids"], answer_ids], dim=1)
        labels = torch.cat([torch.full_like(inputs["input_ids"], -100), answer_ids], dim=1)
        samples.append((inputs, input_ids, labels, answer_ids[0]))
    codes = [shared.model.encode_image_tokens(inputs["pixel_values"]) for inputs, *_ in samples]
    assert not torch.equal(codes[0], codes[1])

    # Measured: lr 3e-3 answers both after 40 steps (answer loss 0.036); at 1e-2 the loss stalls at ln(2) on the
    # answers' first differing token, i.e. the image is ignored.
    optimizer = torch.optim.AdamW(shared.parameters(), lr=3e-3)
    shared.train()
    for _ in range(60):
        for inputs, input_ids, labels, _ in samples:
            loss = shared(input_ids=input_ids, pixel_values=inputs["pixel_values"], labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    shared.eval()
    for inputs, _, _, answer_ids in samples:
        output = shared.generate(**inputs, max_new_tokens=len(answer_ids), do_sample=False)
        assert output[0, inputs["input_ids"].shape[1] :].tolist() == answer_ids.tolist()
