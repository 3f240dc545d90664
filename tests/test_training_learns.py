"""
Proof that `training/train.py` learns (issue 10, part 10): the real script, in a subprocess, overfits the tiny fixture
model on two samples of each kind (stage III, every sample in every step, captions never dropped). Its losses fall by
a large factor, and the saved model reproduces what it was trained on: greedy chat answers through `generate`, and
the VQ codes of a trained image through `JanusProImagePipeline` (greedy, guidance 1).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image


REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "training" / "train.py"
# 45 steps at lr 1e-2: measured, 40 is the fewest that reproduces both images at seeds 42, 1, 2 and 7 (35 gets 8 to
# 14 of 16 codes right); 45 leaves a margin.
MAX_STEPS = 45
DOC_JSON = re.compile(r"```json\n(.*?)```", re.DOTALL)

UNDERSTANDING = [
    {
        "messages": [
            {"role": "user", "content": "<image_placeholder>\nWhat is in the picture?"},
            {"role": "assistant", "content": "A red square on a blue floor."},
        ],
        "images": ["und_image.png"],
    },
    {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
            {"role": "assistant", "content": "Green stripes and a yellow sun."},
        ],
        "images": ["vq_image.png"],
    },
]
TEXT = [
    {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris is the capital of France."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Count to five."},
            {"role": "assistant", "content": "One, two, three, four, five."},
        ]
    },
]
GENERATION = [
    {"caption": "a red square on a blue floor", "image": "und_image.png"},
    {"caption": "green stripes and a yellow sun", "image": "vq_image.png"},
]


@pytest.fixture(scope="module")
def trained(checkpoint_dir, fixture_dir, tmp_path_factory) -> Path:
    """The output folder of a stage III run: 6 samples per step (2 of each kind), lr 1e-2, no warm-up, fp32 CPU."""
    data = tmp_path_factory.mktemp("learn-data")
    for name in ("und_image.png", "vq_image.png"):
        shutil.copy(fixture_dir / name, data / name)
    for name, records in (("understanding", UNDERSTANDING), ("text", TEXT), ("generation", GENERATION)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    output_dir = tmp_path_factory.mktemp("learn-output")
    command = [
        sys.executable, str(TRAIN_SCRIPT),
        "--model_name_or_path", str(checkpoint_dir),
        "--understanding_data", str(data / "understanding.jsonl"),
        "--text_data", str(data / "text.jsonl"),
        "--generation_data", str(data / "generation.jsonl"),
        "--output_dir", str(output_dir),
        "--stage", "3",
        "--mix_ratio", "2:2:2",
        "--per_device_train_batch_size", "6",
        "--max_length", "256",
        "--learning_rate", "1e-2",
        "--warmup_steps", "0",
        "--max_steps", str(MAX_STEPS),
        "--logging_steps", "1",
        "--cfg_drop_prob", "0",
        "--mixed_precision", "no",
        "--use_cpu",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def _log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def test_both_losses_fall_by_a_large_factor(trained):
    log = _log(trained)
    assert [row["step"] for row in log] == list(range(1, MAX_STEPS + 1))
    first, last = log[0], log[-1]
    # Measured (seed 42): text 6.18 -> 0.0016 (x3800), image 6.28 -> 0.069 (x90); the bounds are ~10x looser.
    assert last["text_loss"] < first["text_loss"] / 100, (first, last)
    assert last["image_loss"] < first["image_loss"] / 10, (first, last)
    # Every step held both kinds of targets (2 understanding + 2 text answers, 2 images of 16 codes).
    assert all(row["text_loss"] > 0 and row["image_loss"] > 0 for row in log)
    # docs/training.md shows a line of this log: the script writes the fields it names.
    documented = [block for block in DOC_JSON.findall((REPO / "docs" / "training.md").read_text()) if '"step"' in block]
    assert [sorted(json.loads(block)) for block in documented] == [sorted(first)]
    results = json.loads((trained / "train_results.json").read_text())
    assert results["step"] == MAX_STEPS
    assert (results["text_loss"], results["image_loss"]) == (last["text_loss"], last["image_loss"])


def _greedy_answer(model, processor, record, data_dir: Path) -> tuple[str, int]:
    prompt = processor.apply_chat_template(record["messages"][:1], add_generation_prompt=True)
    images = [Image.open(data_dir / path) for path in record.get("images", [])]
    inputs = processor(text=prompt, images=images or None, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return processor.decode(new_tokens, skip_special_tokens=True), int(new_tokens[-1])


def test_saved_model_greedy_decodes_the_trained_answers(trained, checkpoint_dir, fixture_dir):
    from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor

    processor = JanusProProcessor.from_pretrained(trained)
    model = JanusProForConditionalGeneration.from_pretrained(trained).eval()
    untrained = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir).eval()
    for record in UNDERSTANDING + TEXT:
        expected = record["messages"][1]["content"]
        # The chat template renders an answer as " {content}<eos>", and only that was supervised.
        eos = processor.tokenizer.eos_token_id
        assert _greedy_answer(model, processor, record, fixture_dir) == (" " + expected, eos)
        assert _greedy_answer(untrained, processor, record, fixture_dir)[0] != " " + expected


def test_image_pipeline_greedy_reproduces_the_trained_image_tokens(trained, checkpoint_dir, fixture_dir):
    """
    Greedy (`top_k=1`) at guidance 1: training saw only conditional prompts (`cfg_drop_prob` 0), so the conditional
    branch alone is what it taught. (At the default guidance 5 the untrained unconditional branch pulls the tokens
    away: measured 0 to 8 of 16 codes equal.)
    """
    from safetensors.torch import load_file

    from transformers_janus import JanusProImagePipeline

    pipeline = JanusProImagePipeline.from_pretrained(trained)
    untrained = JanusProImagePipeline.from_pretrained(checkpoint_dir)
    pipeline.set_progress_bar_config(disable=True)
    untrained.set_progress_bar_config(disable=True)
    image_processor, model = pipeline.processor.image_processor, pipeline.model
    cached = {tuple(load_file(file)["codes"].tolist()) for file in (trained / "vq_codes").rglob("*.safetensors")}
    trained_codes = []
    for record in GENERATION:
        image = Image.open(fixture_dir / record["image"])
        pixel_values = image_processor.preprocess_for_generation([image]).pixel_values
        with torch.no_grad():
            codes = model.encode_image_tokens(pixel_values).reshape(1, -1)
        trained_codes.append(tuple(codes[0].tolist()))
        tokens = pipeline(record["caption"], guidance_scale=1.0, top_k=1, output_type="latent").images
        assert torch.equal(tokens, codes), (tokens, codes)
        assert not torch.equal(untrained(record["caption"], guidance_scale=1.0, top_k=1, output_type="latent").images,
                               codes)
    # The codes the script trained on (its VQ cache) are these, and the two images differ.
    assert cached == set(trained_codes) and len(cached) == 2
