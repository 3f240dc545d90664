"""Training data: loading the three kinds, encoding into the batch contract, the VQ code cache, bad samples."""

import json
import shutil

import pytest
import torch
from PIL import Image

from transformers_janus import JanusProProcessor
from transformers_janus.training.data import (
    IGNORE_INDEX,
    BadSampleError,
    JanusProSampleEncoder,
    VQCodeCache,
    check_samples,
    find_bad_samples,
    load_samples,
    sample_generator,
)


QUESTION = [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]
CHAT = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": "A small striped cat."},
    {"role": "user", "content": "What colour is it?"},
    {"role": "assistant", "content": "  Orange, with white paws. "},  # the template strips answers
]


@pytest.fixture(scope="module")
def processor(checkpoint_dir):
    return JanusProProcessor.from_pretrained(checkpoint_dir)


@pytest.fixture()
def data_dir(tmp_path, fixture_dir):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(fixture_dir / "und_image.png", images / "und.png")
    shutil.copy(fixture_dir / "vq_image.png", images / "vq.png")
    return tmp_path


def write_jsonl(path, records):
    path.write_text("".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records))
    return path


def rgb(path):
    return Image.open(path).convert("RGB")


# Loading


def test_jsonl_records_get_line_ids_and_image_paths_relative_to_the_file(processor, data_dir):
    records = [
        {"messages": CHAT, "images": ["images/und.png"]},
        {"messages": [{"role": "user", "content": "<image_placeholder>\nHi"}, {"role": "assistant", "content": "Hi."}],
         "images": "images/und.png"},
    ]
    path = write_jsonl(data_dir / "und.jsonl", [records[0], "", records[1]])  # a blank line keeps line numbers
    dataset = load_samples(path, "understanding")
    assert dataset["record_id"] == ["und.jsonl:1", "und.jsonl:3"]
    assert dataset["images"] == [[str(data_dir / "images" / "und.png")]] * 2
    assert dataset["kind"] == ["understanding"] * 2
    assert dataset["load_problem"] == ["", ""]
    # String and typed-part contents share one schema and render exactly as the original messages.
    assert dataset[1]["messages"][0]["content"] == [{"type": "text", "text": "<image_placeholder>\nHi"}]
    for record, raw in zip(dataset, records):
        assert processor.apply_chat_template(record["messages"]) == processor.apply_chat_template(raw["messages"])


def test_directory_read_by_load_dataset(data_dir):
    folder = data_dir / "gen_folder"
    folder.mkdir()
    shutil.copy(data_dir / "images" / "vq.png", folder / "cat.png")
    records = [{"caption": "a cat", "image": "cat.png"}, {"caption": "a dog", "image": "x.png"}]
    write_jsonl(folder / "train.jsonl", records)
    dataset = load_samples(folder, "generation")
    assert dataset["record_id"] == ["gen_folder[0]", "gen_folder[1]"]
    assert dataset["image"] == [str(folder / "cat.png"), str(folder / "x.png")]
    assert dataset["caption"] == ["a cat", "a dog"]
    assert dataset["load_problem"] == ["", ""]


def test_unknown_kind_and_file_type_are_refused(data_dir):
    with pytest.raises(ValueError, match="`kind` must be one of"):
        load_samples(data_dir, "video")
    (data_dir / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown file type '.txt'"):
        load_samples(data_dir / "data.txt", "text")


# Encoding understanding and text


def answer_spans(labels):
    """Runs of supervised positions, as (start, end)."""
    supervised = (labels != IGNORE_INDEX).tolist() + [False]
    spans, start = [], None
    for position, flag in enumerate(supervised):
        if flag and start is None:
            start = position
        if not flag and start is not None:
            spans.append((start, position))
            start = None
    return spans


def test_understanding_sample_matches_the_processor_and_supervises_exactly_the_answers(processor, data_dir):
    path = write_jsonl(data_dir / "und.jsonl", [{"messages": CHAT, "images": ["images/und.png"]}])
    record = load_samples(path, "understanding")[0]
    sample = JanusProSampleEncoder(processor, max_length=512).encode(record)

    # The processor on the chat template's text is the independent encoding (default system prompt, BOS, expansion).
    expected = processor(text=processor.apply_chat_template(CHAT), images=[rgb(data_dir / "images" / "und.png")])
    assert torch.equal(sample["input_ids"], expected.input_ids[0])
    assert torch.equal(sample["pixel_values"], expected.pixel_values)
    assert sample["input_ids"][0] == processor.bos_token_id
    assert (sample["input_ids"] == processor.image_token_id).sum() == processor.num_image_tokens

    eos = processor.tokenizer.eos_token
    spans = answer_spans(sample["labels"])
    decoded = [processor.tokenizer.decode(sample["labels"][start:end]) for start, end in spans]
    assert decoded == [" A small striped cat." + eos, " Orange, with white paws." + eos]
    for start, end in spans:  # supervised labels are the input tokens themselves (the model shifts)
        assert torch.equal(sample["labels"][start:end], sample["input_ids"][start:end])
    assert (sample["image_token_ids"] == IGNORE_INDEX).all() and (sample["image_labels"] == IGNORE_INDEX).all()
    assert (sample["kind"], sample["record_id"]) == ("understanding", "und.jsonl:1")


def test_text_sample_with_system_prompt_and_string_contents(processor, data_dir):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "Thanks"},  # a trailing user turn is prompt, not supervised
    ]
    record = load_samples(write_jsonl(data_dir / "text.jsonl", [{"messages": messages}]), "text")[0]
    sample = JanusProSampleEncoder(processor, max_length=512).encode(record)
    expected = processor.tokenizer(processor.apply_chat_template(messages)).input_ids
    assert sample["input_ids"].tolist() == expected
    assert processor.tokenizer.decode(sample["input_ids"][1:]).startswith("Be brief.\n\n<|User|>: Name a prime.")
    spans = answer_spans(sample["labels"])
    assert [processor.tokenizer.decode(sample["labels"][a:b]) for a, b in spans] == [
        " Seven." + processor.tokenizer.eos_token
    ]
    assert "pixel_values" not in sample and sample["kind"] == "text"


# Generation and the VQ code cache


def test_generation_sample_layout_codes_and_cfg_drop(processor, model, data_dir):
    path = write_jsonl(data_dir / "gen.jsonl", [{"caption": "a red cat on a mat", "image": "images/vq.png"}])
    record = load_samples(path, "generation")[0]
    cache = VQCodeCache(model, processor.image_processor, data_dir / "cache")
    encoder = JanusProSampleEncoder(processor, max_length=512, vq_codes=cache, cfg_drop_prob=0.0)
    sample = encoder.encode(record)

    with torch.no_grad():
        pixel_values = processor.image_processor.preprocess_for_generation(rgb(data_dir / "images" / "vq.png"))
        codes = model.encode_image_tokens(pixel_values.pixel_values).reshape(-1)
    prompt = processor(text=processor.build_image_generation_prompt("a red cat on a mat")).input_ids[0]
    n = processor.num_image_tokens
    assert codes.numel() == n
    assert torch.equal(sample["input_ids"], torch.cat([prompt, torch.full((n,), processor.pad_token_id),
                                                       torch.tensor([processor.eoi_token_id])]))
    ignore_prompt = torch.full((len(prompt),), IGNORE_INDEX)
    expected_codes = torch.cat([ignore_prompt, codes, torch.tensor([IGNORE_INDEX])])
    assert torch.equal(sample["image_token_ids"], expected_codes)
    assert torch.equal(sample["image_labels"], expected_codes)
    assert (sample["labels"] == IGNORE_INDEX).all()
    assert sample["input_ids"][len(prompt) - 1] == processor.boi_token_id

    dropped = JanusProSampleEncoder(processor, 512, vq_codes=cache, cfg_drop_prob=1.0).encode(record)
    unconditional = processor.get_unconditional_input_ids(prompt)
    assert torch.equal(dropped["input_ids"][: len(prompt)], unconditional)
    assert torch.equal(dropped["input_ids"][len(prompt) :], sample["input_ids"][len(prompt) :])
    assert torch.equal(dropped["image_token_ids"], sample["image_token_ids"])

    # p = 0.5: the drop is a function of the per-sample generator, the same on every call.
    half = JanusProSampleEncoder(processor, 512, vq_codes=cache, cfg_drop_prob=0.5)
    def dropped_at(position):
        ids = half.encode(record, generator=sample_generator(7, 3, position))["input_ids"]
        return bool(ids[1] == processor.pad_token_id)

    decisions = [dropped_at(position) for position in range(64)]
    again = [dropped_at(position) for position in range(64)]
    expected_decisions = [bool(torch.rand((), generator=sample_generator(7, 3, p)) < 0.5) for p in range(64)]
    assert decisions == again == expected_decisions
    assert 16 < sum(decisions) < 48  # both outcomes occur (binomial(64, 0.5): outside this range p < 1e-4)


def test_vq_cache_reads_back_and_recomputes_for_a_changed_image_or_vq_model(processor, model, data_dir):
    image = data_dir / "images" / "vq.png"
    cache = VQCodeCache(model, processor.image_processor, data_dir / "cache")
    codes = cache.get(str(image))
    assert cache.num_encoded == 1
    files = list(cache.cache_dir.iterdir())
    assert [file.suffix for file in files] == [".safetensors"]  # no temporary file left behind

    # A second cache object (a new run) reads the file: the VQ model is not called.
    fresh = VQCodeCache(model, processor.image_processor, data_dir / "cache")
    original_encode = model.encode_image_tokens
    model.encode_image_tokens = lambda *args, **kwargs: pytest.fail("the VQ model ran for a cached image")
    try:
        assert torch.equal(fresh.get(str(image)), codes)
        assert fresh.num_encoded == 0
    finally:
        del model.encode_image_tokens
    assert model.encode_image_tokens.__func__ is original_encode.__func__

    # A changed image file gets its own codes.
    changed = Image.open(image).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    changed.save(image)
    with torch.no_grad():
        expected = model.encode_image_tokens(processor.image_processor.preprocess_for_generation(changed).pixel_values)
    assert torch.equal(fresh.get(str(image)), expected.reshape(-1))
    assert fresh.num_encoded == 1

    # Another VQ model (one weight changed) neither reads nor overwrites the old codes.
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.vq_model.quant_conv.weight.add_(0.5)
    other_cache = VQCodeCache(other, processor.image_processor, data_dir / "cache")
    assert other_cache.fingerprint != fresh.fingerprint
    with torch.no_grad():
        expected = other.encode_image_tokens(processor.image_processor.preprocess_for_generation(changed).pixel_values)
    assert torch.equal(other_cache.get(str(image)), expected.reshape(-1))
    assert other_cache.num_encoded == 1
    assert other_cache.precompute([str(image)]) == 0  # already there



def test_vq_code_cache_fingerprint_is_the_same_in_every_process(checkpoint_dir, tmp_path):
    """A cache is shared between runs (the shapes recipe's stages): its fingerprint must not depend on the process
    (diffusers lists `_use_default_values` from a set, in an order that changes with the hash seed)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor\n"
        "from transformers_janus.training.data import VQCodeCache\n"
        "model = JanusProForConditionalGeneration.from_pretrained(sys.argv[1])\n"
        "processor = JanusProProcessor.from_pretrained(sys.argv[1])\n"
        "print(VQCodeCache(model, processor.image_processor, sys.argv[2]).fingerprint)\n"
    )
    prints = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", script, str(checkpoint_dir), str(tmp_path)], env=env,
                             capture_output=True, text=True, check=True)
        prints.add(run.stdout.strip().splitlines()[-1])
    assert len(prints) == 1, prints

# Bad samples


def test_bad_samples_are_found_up_front_with_record_ids_and_reasons(processor, model, data_dir):
    (data_dir / "images" / "broken.png").write_bytes(b"not a png")
    und = write_jsonl(data_dir / "und.jsonl", [
        {"messages": CHAT, "images": ["images/und.png"]},                         # 1 good
        {"messages": CHAT, "images": ["images/missing.png"]},                     # 2 missing image
        {"messages": CHAT, "images": ["images/broken.png"]},                      # 3 unreadable image
        {"messages": CHAT, "images": []},                                         # 4 count mismatch
        {"messages": []},                                                         # 5 empty messages
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]},  # 6 no answer
        {"messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]},  # 7 too long
        "{not json",                                                              # 8
    ])
    gen = write_jsonl(data_dir / "gen.jsonl", [
        {"caption": "a cat", "image": "images/vq.png"},                           # 1 good
        {"image": "images/vq.png"},                                               # 2 missing caption
        {"caption": "a cat", "image": "images/nope.png"},                         # 3 missing image
    ])
    data = {"understanding": load_samples(und, "understanding"), "generation": load_samples(gen, "generation")}
    encoder = JanusProSampleEncoder(
        processor, max_length=300, vq_codes=VQCodeCache(model, processor.image_processor, data_dir / "cache")
    )
    bad = {kind: {s.record_id: s.reason for s in find_bad_samples(dataset, encoder)} for kind, dataset in data.items()}
    assert sorted(bad["understanding"]) == [f"und.jsonl:{line}" for line in range(2, 9)]
    reasons = bad["understanding"]
    assert "missing.png does not exist" in reasons["und.jsonl:2"]
    assert "broken.png is unreadable" in reasons["und.jsonl:3"]
    assert "1 `<image_placeholder>`/image items in the messages but 0 images" in reasons["und.jsonl:4"]
    assert reasons["und.jsonl:5"] == "`messages` is empty"
    assert "no assistant answer" in reasons["und.jsonl:6"]
    assert "longer than max_length=300" in reasons["und.jsonl:7"]
    assert "not valid JSON" in reasons["und.jsonl:8"]
    assert sorted(bad["generation"]) == ["gen.jsonl:2", "gen.jsonl:3"]
    assert "caption" in bad["generation"]["gen.jsonl:2"] and "nope.png" in bad["generation"]["gen.jsonl:3"]

    with pytest.raises(BadSampleError) as error:
        check_samples(data, encoder, on_bad_sample="fail", max_listed=2)
    message = str(error.value)
    assert "understanding: 7 of 8 records (und.jsonl:2: " in message and "... and 5 more" in message
    assert "generation: 2 of 3 records (gen.jsonl:2: " in message and "--on_bad_sample skip" in message

    kept = check_samples(data, encoder, on_bad_sample="skip")
    assert kept["understanding"]["record_id"] == ["und.jsonl:1"]
    # Two processes each check half the records; the gathered verdict is the same on both
    shards = [find_bad_samples(dataset.shard(2, rank, contiguous=True), encoder) for rank in (0, 1) for dataset in data.values()]
    everything = [sample for shard in shards for sample in shard]
    for rank in (0, 1):
        split = check_samples(data, encoder, on_bad_sample="skip", shard=(rank, 2), gather=lambda found: everything)
        assert {kind: list(dataset["record_id"]) for kind, dataset in split.items()} == {
            kind: list(dataset["record_id"]) for kind, dataset in kept.items()
        }
    checked = []
    check_samples(data, encoder, on_bad_sample="skip", shard=(1, 2), gather=lambda found: checked.extend(found) or everything)
    assert {s.record_id for s in checked} == {"und.jsonl:5", "und.jsonl:6", "und.jsonl:7", "und.jsonl:8", "gen.jsonl:3"}
    assert kept["generation"]["record_id"] == ["gen.jsonl:1"]
    assert all(encoder.encode(record)["record_id"] for dataset in kept.values() for record in dataset)

    # Encoding a bad record anyway (mid-epoch) names it.
    with pytest.raises(BadSampleError, match=r"understanding record und\.jsonl:2: .*missing\.png"):
        encoder.encode(data["understanding"][1])
    with pytest.raises(BadSampleError, match=r"record und\.jsonl:7: \d+ tokens, longer than max_length=300"):
        encoder.encode(data["understanding"][6])
