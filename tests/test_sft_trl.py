"""
`training/sft_trl.py` and `transformers_janus.training.sft` (issue 11, part 1): TRL's `SFTTrainer` on Janus-Pro with
our encoder and collator. The batches the trainer builds supervise exactly the assistant answers; a few steps of the
script (full and `--use_peft`) lower the text loss, LoRA trains only the language model and its saved adapter loads
back with identical logits; the generation mode lowers the image loss, normalised by the optimizer step's image
targets; a sample that `max_length` would cut is refused, or dropped, by record id. Tiny fixture model, fp32, CPU.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "sft_trl.py"
IGNORE = -100

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
            {"role": "system", "content": "You answer in three words."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
            {"role": "assistant", "content": "Green yellow stripes."},
            {"role": "user", "content": "And the sky?"},
            {"role": "assistant", "content": "Clear blue sky."},
        ],
        "images": ["vq_image.png"],
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris is the capital of France."},
        ]
    },
]
ANSWERS = [["A red square on a blue floor."], ["Green yellow stripes.", "Clear blue sky."], ["Paris is the capital of France."]]
GENERATION = [
    {"caption": "a red square on a blue floor", "image": "und_image.png"},
    {"caption": "green stripes and a yellow sun", "image": "vq_image.png"},
]


@pytest.fixture(scope="module")
def sft_script():
    spec = importlib.util.spec_from_file_location("sft_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, fixture_dir) -> Path:
    folder = tmp_path_factory.mktemp("sft-data")
    for name in ("und_image.png", "vq_image.png"):
        shutil.copy(fixture_dir / name, folder / name)
    for name, records in (("understanding.jsonl", UNDERSTANDING), ("generation.jsonl", GENERATION)):
        (folder / name).write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


@pytest.fixture(scope="module")
def processor(checkpoint_dir):
    from transformers_janus import JanusProProcessor

    return JanusProProcessor.from_pretrained(checkpoint_dir)


def _config(output_dir, **overrides):
    from trl import SFTConfig

    settings = dict(
        output_dir=str(output_dir), per_device_train_batch_size=3, max_length=512, use_cpu=True, bf16=False,
        gradient_checkpointing=False, report_to="none", seed=0,
    )
    return SFTConfig(**{**settings, **overrides})


def _run_script(sft_script, argv: list[str]):
    parser = sft_script.make_parser()
    return sft_script.main(*parser.parse_args_and_config(argv))


def _label_spans(labels: torch.Tensor) -> list[list[int]]:
    """Contiguous runs of supervised tokens."""
    spans, current = [], []
    for token in labels.tolist():
        if token == IGNORE:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(token)
    return spans + ([current] if current else [])


def test_trainer_batches_supervise_exactly_the_answers(checkpoint_dir, processor, data_dir, tmp_path):
    from transformers_janus import JanusProForConditionalGeneration
    from transformers_janus.training.data import load_samples
    from transformers_janus.training.sft import JanusProSFTTrainer

    model = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)
    trainer = JanusProSFTTrainer(
        model=model,
        args=_config(tmp_path),
        train_dataset=load_samples(data_dir / "understanding.jsonl", "understanding"),
        processing_class=processor,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = processor.tokenizer
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values"}
    assert len(batch["pixel_values"]) == 2

    eos = tokenizer.eos_token
    rows = []
    for input_ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        length = int(mask.sum())
        # BOS exactly once, first; padding only after the sample, never supervised
        assert input_ids[0] == processor.bos_token_id and int((input_ids == processor.bos_token_id).sum()) == 1
        assert mask[:length].all() and not mask[length:].any() and (labels[length:] == IGNORE).all()
        for token_id in (processor.image_token_id, processor.boi_token_id, processor.eoi_token_id, processor.bos_token_id):
            assert token_id not in labels.tolist()
        # Labels equal the inputs where supervised (the model shifts)
        supervised = labels != IGNORE
        assert torch.equal(labels[supervised], input_ids[supervised])
        rows.append([tokenizer.decode(span) for span in _label_spans(labels)])
    # Each row's supervised spans are exactly its assistant answers with their EOS (the shuffle sets the row order)
    expected = [[f" {answer}{eos}" if not answer.startswith(" ") else answer + eos for answer in answers] for answers in ANSWERS]
    assert sorted(rows) == sorted(expected)
    decoded = " ".join(" ".join(row) for row in rows)
    for system_prompt in ("You answer in three words", "Be brief", "helpful language and vision assistant"):
        assert system_prompt not in decoded


def test_script_full_finetuning_lowers_the_loss(sft_script, checkpoint_dir, data_dir, tmp_path):
    trainer = _run_script(
        sft_script,
        [
            "--model_name_or_path", str(checkpoint_dir), "--dataset_name", str(data_dir / "understanding.jsonl"),
            "--output_dir", str(tmp_path / "full"), "--max_steps", "8", "--logging_steps", "1",
            "--per_device_train_batch_size", "3", "--learning_rate", "5e-3", "--lr_scheduler_type", "constant",
            "--report_to", "none", "--save_strategy", "no", "--seed", "0",
        ],
    )
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], losses  # measured 6.06 -> 2.50
    from transformers_janus import JanusProForConditionalGeneration

    saved = JanusProForConditionalGeneration.from_pretrained(tmp_path / "full")
    trained = trainer.model.state_dict()
    assert all(torch.equal(tensor, trained[name]) for name, tensor in saved.state_dict().items())
    card = (tmp_path / "full" / "README.md").read_text()  # ours, not TRL's (base_model: None, text-generation)
    assert "pipeline_tag: image-text-to-text" in card and "base_model: None" not in card
    assert "janus-pro" in card and "- trl" in card and "SFTTrainer" in card


def test_script_lora_trains_only_the_language_model_and_reloads(sft_script, checkpoint_dir, data_dir, tmp_path):
    from peft import PeftModel

    from transformers_janus import JanusProForConditionalGeneration
    from transformers_janus.training.sft import DEFAULT_LORA_TARGET_MODULES

    output_dir = tmp_path / "lora"
    trainer = _run_script(
        sft_script,
        [
            "--model_name_or_path", str(checkpoint_dir), "--dataset_name", str(data_dir / "understanding.jsonl"),
            "--output_dir", str(output_dir), "--max_steps", "10", "--logging_steps", "1",
            "--per_device_train_batch_size", "3", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
            "--report_to", "none", "--save_strategy", "no", "--seed", "0", "--use_peft", "--lora_dropout", "0",
        ],
    )
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # LoRA leaves lm_head and the embeddings frozen (random in the fixture): measured 6.06 -> 3.63 in 10 steps
    assert losses[-1] < losses[0] - 1.8, losses

    model = trainer.model
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    num_layers = model.get_base_model().config.text_config.num_hidden_layers
    assert len(trainable) == 2 * 7 * num_layers  # lora_A and lora_B of the 7 projections of every layer
    assert all(".model.language_model." in name and ".lora_" in name for name in trainable)
    assert json.loads((output_dir / "adapter_config.json").read_text())["target_modules"] == DEFAULT_LORA_TARGET_MODULES
    card = (output_dir / "README.md").read_text()
    assert "- lora" in card and "- peft" in card and "base_model: None" not in card and "LoRA supervised" in card

    batch = next(iter(trainer.get_train_dataloader()))
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        base = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)
        reloaded = PeftModel.from_pretrained(base, output_dir).eval()
        logits = reloaded(**inputs).logits
        with reloaded.disable_adapter():
            untrained = reloaded(**inputs).logits
    assert torch.equal(logits, expected)
    assert (untrained - expected).abs().max() > 1e-2  # the adapter is what changes the logits


def test_generation_mode_lowers_the_image_loss(sft_script, checkpoint_dir, processor, data_dir, tmp_path):
    from transformers_janus import JanusProForConditionalGeneration

    base = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)
    trainer = _run_script(
        sft_script,
        [
            "--model_name_or_path", str(checkpoint_dir), "--dataset_name", str(data_dir / "generation.jsonl"),
            "--data_kind", "generation", "--cfg_drop_prob", "0", "--output_dir", str(tmp_path / "gen"),
            "--max_steps", "10", "--logging_steps", "1", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-2", "--lr_scheduler_type", "constant", "--report_to", "none",
            "--save_strategy", "no", "--seed", "0",
        ],
    )
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[-1]["image_loss"] < 0.5 * logs[0]["image_loss"], logs  # measured 6.28 -> 2.82

    batch = next(iter(trainer.get_train_dataloader()))
    assert int((batch["image_labels"] != IGNORE).sum()) == 2 * processor.num_image_tokens
    assert (batch["labels"] == IGNORE).all()
    saved = JanusProForConditionalGeneration.from_pretrained(tmp_path / "gen").eval()
    with torch.no_grad():
        before, after = base.eval()(**batch), saved(**batch)
    assert after.text_loss == 0 and before.text_loss == 0
    assert after.image_loss < 0.5 * before.image_loss, (before.image_loss, after.image_loss)  # measured 6.28 -> 2.73


def test_image_loss_is_normalised_by_the_steps_image_targets(checkpoint_dir, processor, data_dir, tmp_path):
    """Trainer counts `num_items_in_batch` from `labels` (0 here); the image loss takes the step's image count."""
    from transformers_janus import JanusProForConditionalGeneration
    from transformers_janus.training.data import VQCodeCache, load_samples
    from transformers_janus.training.sft import JanusProSFTTrainer

    model = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)
    vq_codes = VQCodeCache(model, processor.image_processor, tmp_path / "vq")
    trainer = JanusProSFTTrainer(
        model=model,
        args=_config(tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2),
        train_dataset=load_samples(data_dir / "generation.jsonl", "generation"),
        processing_class=processor,
        vq_codes=vq_codes,
        cfg_drop_prob=0.0,
    )
    micro_batches, num_items_in_batch = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 2, "cpu")
    assert int(num_items_in_batch) == 0
    step_targets = 2 * processor.num_image_tokens
    assert [int(batch["num_image_items_in_batch"]) for batch in micro_batches] == [step_targets] * 2
    model.train()
    first = dict(micro_batches[0])
    loss = trainer.compute_loss(model, dict(first), num_items_in_batch=num_items_in_batch)
    with torch.no_grad():
        own = model(**{key: value for key, value in first.items() if key != "num_image_items_in_batch"})
    # The micro-batch's mean image cross-entropy, weighted by its share (16 of 32) of the step's image targets
    torch.testing.assert_close(loss, own.image_loss * processor.num_image_tokens / step_targets, rtol=1e-5, atol=1e-6)


def _max_length_cutting_an_image(processor, data_dir) -> tuple[int, list[str]]:
    """A max_length inside the first record's image block that fits the text record, and the records it refuses."""
    from transformers_janus.training.data import JanusProSampleEncoder, load_samples

    records = load_samples(data_dir / "understanding.jsonl", "understanding")
    encoder = JanusProSampleEncoder(processor, max_length=10_000)
    lengths = [encoder.sample_length(record) for record in records]
    image_start = int((encoder.encode(records[0])["input_ids"] == processor.image_token_id).nonzero()[0])
    max_length = image_start + processor.num_image_tokens // 2
    assert lengths[2] <= max_length < lengths[0]
    return max_length, [record["record_id"] for record, length in zip(records, lengths) if length > max_length]


def test_sample_cut_by_max_length_is_refused_by_record_id(checkpoint_dir, processor, data_dir, tmp_path):
    max_length, refused = _max_length_cutting_an_image(processor, data_dir)
    run = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--model_name_or_path", str(checkpoint_dir),
            "--dataset_name", str(data_dir / "understanding.jsonl"), "--output_dir", str(tmp_path / "refused"),
            "--max_length", str(max_length), "--max_steps", "1", "--report_to", "none",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert run.returncode != 0
    assert "BadSampleError: Bad training samples found before training" in run.stderr
    assert f"understanding: {len(refused)} of 3 records" in run.stderr
    for record_id in refused:
        assert f"{record_id}: " in run.stderr and f"longer than max_length={max_length}" in run.stderr
    assert "understanding.jsonl:3" not in run.stderr
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


def test_sample_cut_by_max_length_is_dropped_with_skip(checkpoint_dir, processor, data_dir, tmp_path):
    from transformers_janus import JanusProForConditionalGeneration
    from transformers_janus.training.data import load_samples
    from transformers_janus.training.sft import JanusProSFTTrainer

    max_length, refused = _max_length_cutting_an_image(processor, data_dir)
    trainer = JanusProSFTTrainer(
        model=JanusProForConditionalGeneration.from_pretrained(checkpoint_dir),
        args=_config(tmp_path, max_length=max_length),
        train_dataset=load_samples(data_dir / "understanding.jsonl", "understanding"),
        processing_class=processor,
        on_bad_sample="skip",
    )
    kept = [f"understanding.jsonl:{line}" for line in (1, 2, 3) if f"understanding.jsonl:{line}" not in refused]
    assert "understanding.jsonl:1" in refused and trainer.train_dataset["record_id"] == kept
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] <= max_length
    # Every image block in the batch is whole: as many placeholders as images times their tokens
    num_images = 0 if "pixel_values" not in batch else len(batch["pixel_values"])
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == num_images * processor.num_image_tokens


def test_lora_target_modules_from_the_command_line():
    from transformers_janus.training.sft import DEFAULT_LORA_TARGET_MODULES, lora_target_modules

    assert lora_target_modules(None) == DEFAULT_LORA_TARGET_MODULES
    assert lora_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert lora_target_modules([r"model\.language_model\..*\.q_proj"]) == r"model\.language_model\..*\.q_proj"
    assert lora_target_modules(["all-linear"]) == "all-linear"
