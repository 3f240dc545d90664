"""
The training loop's parts: stage freeze policies, the globally normalised optimizer step, checkpoints (atomic,
verified, exact resume) and the two-process run. Batches are built by hand in the training batch contract (issue 10)
on the tiny fixture model; the end-to-end runs drive `training/train.py` in subprocesses.
"""

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


IGNORE = -100


@pytest.fixture(scope="module")
def tiny_model(checkpoint_dir):
    from transformers_janus import JanusProForConditionalGeneration

    torch.manual_seed(0)
    return JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)


def _hand_batch(config, rows: list[tuple[str, int]], seed: int) -> dict:
    """
    Right-padded rows of the contract, one per (kind, length): "text" rows supervise their second half, "gen" rows
    hold a 4-token prompt, `<begin_of_image>`, 16 image codes (supervised) and `<end_of_image>`.
    """
    generator = torch.Generator().manual_seed(seed)
    num_image_tokens = config.num_image_tokens
    lengths = [length if kind == "text" else 4 + 1 + num_image_tokens + 1 for kind, length in rows]
    width = max(lengths)
    input_ids = torch.full((len(rows), width), config.pad_token_id)
    labels = torch.full_like(input_ids, IGNORE)
    image_token_ids = torch.full_like(input_ids, IGNORE)
    attention_mask = torch.zeros_like(input_ids)
    for row, ((kind, _), length) in enumerate(zip(rows, lengths)):
        attention_mask[row, :length] = 1
        if kind == "text":
            ids = torch.randint(3, 300, (length,), generator=generator)
            input_ids[row, :length] = ids
            labels[row, length // 2 : length] = ids[length // 2 :]
        else:
            input_ids[row, :4] = torch.randint(3, 300, (4,), generator=generator)
            input_ids[row, 4] = config.boi_token_id
            codes = torch.randint(0, config.vq_config.num_vq_embeddings, (num_image_tokens,), generator=generator)
            image_token_ids[row, 5 : 5 + num_image_tokens] = codes
            input_ids[row, 5 + num_image_tokens] = config.eoi_token_id
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "image_token_ids": image_token_ids,
        "image_labels": image_token_ids.clone(),
    }


def _split_rows(batch: dict, parts: list[list[int]]) -> list[dict]:
    return [{key: value[rows] for key, value in batch.items()} for rows in parts]


# Stages


def test_stage_freeze_policies_train_what_the_paper_says(tiny_model):
    from transformers_janus.training.stages import STAGES, apply_freeze_policy

    model = copy.deepcopy(tiny_model)
    def top(names):
        return sorted({".".join(n.split(".")[: 2 if n.startswith("model.") else 1]) for n in names})

    trained = {stage: top(apply_freeze_policy(model, STAGES[stage].trainable_modules)) for stage in STAGES}
    assert trained[1] == ["model.aligner", "model.gen_aligner", "model.gen_embed", "model.gen_head"]
    assert trained[2] == [
        "lm_head", "model.aligner", "model.gen_aligner", "model.gen_embed", "model.gen_head", "model.language_model"
    ]
    assert trained[3] == trained[2][:5] + ["model.language_model", "model.vision_model"]
    # The policy of the last call holds, and the VQ tokenizer is frozen in every stage.
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert frozen == {name for name, _ in model.named_parameters() if name.startswith("model.vq_model.")}
    assert [(s.learning_rate, s.warmup_steps, s.mix_ratio) for s in STAGES.values()] == [
        (1e-3, 600, (1, 0, 3)), (1e-4, 5000, (2, 3, 5)), (4e-5, 0, (5, 1, 4))
    ]


def test_freeze_policy_refuses_a_prefix_that_matches_nothing(tiny_model):
    from transformers_janus.training.stages import apply_freeze_policy

    model = copy.deepcopy(tiny_model)
    with pytest.raises(ValueError, match=r"\['model.alinger.'\] match no parameter"):
        apply_freeze_policy(model, ["model.aligner.", "model.alinger."])


# The optimizer step


def _sgd_step(model, micro_batches):
    """One `training_step` with plain SGD at lr 1, so the weights move by exactly minus the step's gradient."""
    from accelerate import Accelerator

    from transformers_janus.training.optimization import training_step

    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    output = training_step(accelerator, model, optimizer, scheduler, micro_batches, max_grad_norm=None)
    return output


def _hand_loss(model, batch) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Sums of the text and image token cross-entropies of `batch` and their counts, without the model's loss code."""
    hidden = model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], image_token_ids=batch["image_token_ids"]
    ).last_hidden_state
    logits = model.lm_head(hidden)
    text_targets = batch["labels"][:, 1:]
    text_sum = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), text_targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    image_targets = batch["image_labels"][:, 1:]
    positions = image_targets != IGNORE
    image_sum = torch.nn.functional.cross_entropy(
        model.get_image_logits(hidden[:, :-1][positions]), image_targets[positions], reduction="sum"
    )
    return text_sum, image_sum, int((text_targets != IGNORE).sum()), int(positions.sum())


def test_accumulated_step_equals_one_batch_and_the_token_mean_loss(tiny_model):
    """
    Two micro-batches of unequal target counts step the weights as one batch of all rows does, and that step's
    gradient is the gradient of (sum of token cross-entropies) / (targets of the step) of each kind, computed here by
    hand. The mean of per-micro-batch means (dividing by the accumulation steps) is measured to be far off.
    """
    from transformers_janus.training.stages import STAGES, apply_freeze_policy

    batch = _hand_batch(tiny_model.config, [("text", 30), ("gen", 0), ("text", 8), ("text", 20), ("gen", 0)], seed=1)
    parts = [[0, 1], [2, 3, 4]]
    models = {}
    for name in ("one", "two", "hand", "mean_of_means"):
        models[name] = copy.deepcopy(tiny_model)
        apply_freeze_policy(models[name], STAGES[3].trainable_modules)
    output_one = _sgd_step(models["one"], [batch])
    output_two = _sgd_step(models["two"], _split_rows(batch, parts))

    text_sum, image_sum, num_text, num_image = _hand_loss(models["hand"], batch)
    (text_sum / num_text + image_sum / num_image).backward()
    for micro_batch in _split_rows(batch, parts):
        t, i, nt, ni = _hand_loss(models["mean_of_means"], micro_batch)
        ((t / max(nt, 1) + i / max(ni, 1)) / len(parts)).backward()

    for output in (output_one, output_two):
        assert (output.num_text_targets.item(), output.num_image_targets.item()) == (num_text, num_image)
        torch.testing.assert_close(output.text_loss, text_sum.detach() / num_text, rtol=1e-5, atol=0)
        torch.testing.assert_close(output.image_loss, image_sum.detach() / num_image, rtol=1e-5, atol=0)

    start = dict(tiny_model.named_parameters())
    one, two = dict(models["one"].named_parameters()), dict(models["two"].named_parameters())
    mean_of_means = dict(models["mean_of_means"].named_parameters())
    diffs = {"two": 0.0, "hand": 0.0, "mean_of_means": 0.0}
    for name, parameter in models["hand"].named_parameters():
        if not parameter.requires_grad:
            assert torch.equal(one[name], start[name]) and torch.equal(two[name], start[name]), name
            continue
        step = (one[name] - start[name]).detach()
        if parameter.grad is None:  # no image in the batch: SigLIP and its adaptor get no gradient
            assert not step.any() and mean_of_means[name].grad is None, name
            continue
        diffs["two"] = max(diffs["two"], (two[name] - one[name]).abs().max().item())
        diffs["hand"] = max(diffs["hand"], (step + parameter.grad).abs().max().item())
        diffs["mean_of_means"] = max(diffs["mean_of_means"], (step + mean_of_means[name].grad).abs().max().item())
    # Measured: two vs one 4e-8, hand 6e-8 (fp32 summation order); the mean of means is off by 8e-3.
    assert diffs["two"] < 1e-6 and diffs["hand"] < 1e-6, diffs
    assert diffs["mean_of_means"] > 1e-3, diffs


# The script, end to end (subprocesses)

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "training" / "train.py"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Four records of each kind; the images are small random pictures of different shapes."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("training-data")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        pixels = rng.integers(0, 256, (48 + 8 * index, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"images/{index}.png")
    understanding = [
        {
            "messages": [
                {"role": "user", "content": f"<image_placeholder>\nWhat is picture {index}?"},
                {"role": "assistant", "content": f"Picture number {index}."},
            ],
            "images": [f"images/{index}.png"],
        }
        for index in range(4)
    ]
    text = [
        {"messages": [{"role": "user", "content": f"Say {word}."}, {"role": "assistant", "content": f"{word} {word}."}]}
        for word in ("red", "green", "blue", "cyan")
    ]
    generation = [{"caption": f"class {index}", "image": f"images/{index}.png"} for index in range(4)]
    for name, records in (("understanding", understanding), ("text", text), ("generation", generation)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return root


def _train_command(checkpoint_dir, data_dir, output_dir, *extra: str) -> list[str]:
    """A tiny stage III run on the fixture: fp32, CPU, 4 samples per step (1:1:2), a warm-up across the resume."""
    return [
        str(TRAIN_SCRIPT),
        "--config", str(REPO / "training" / "configs" / "stage3.yaml"),
        "--model_name_or_path", str(checkpoint_dir),
        "--understanding_data", str(data_dir / "understanding.jsonl"),
        "--text_data", str(data_dir / "text.jsonl"),
        "--generation_data", str(data_dir / "generation.jsonl"),
        "--vq_cache_dir", str(data_dir / "vq_codes"),
        "--output_dir", str(output_dir),
        "--mix_ratio", "1:1:2",
        "--max_length", "128",
        "--learning_rate", "1e-3",
        "--warmup_steps", "3",
        "--save_steps", "2",
        "--logging_steps", "1",
        "--mixed_precision", "no",
        "--gradient_checkpointing", "false",
        "--use_cpu",
        "--log_samples",
        *extra,
    ]


def _environment() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _run(command: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*(launcher or [sys.executable]), *command], env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(folder) / "model.safetensors")


def _samples(output_dir, rank: int) -> list[dict]:
    lines = (Path(output_dir) / "samples" / f"rank-{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def killed_and_resumed(checkpoint_dir, data_dir, tmp_path_factory):
    """
    A run killed with SIGKILL right after its step-2 checkpoint, resumed with `latest` to step 2 steps later; and the
    uninterrupted run of that length (one process, micro-batches of 2 samples, 2 accumulation steps).
    """
    killed = tmp_path_factory.mktemp("killed")
    command = _train_command(
        checkpoint_dir, data_dir, killed, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"
    )
    process = subprocess.Popen(
        [sys.executable, *command, "--max_steps", "1000"], env=_environment(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while not (killed / "checkpoint-2" / "manifest.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended or hung before its first checkpoint: {process.stderr.read()[-3000:]}")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    complete = [path for path in killed.glob("checkpoint-*") if (path / "manifest.json").exists()]
    last = max(int(path.name.split("-")[1]) for path in complete)
    end = last + 2
    resumed = _run([*command, "--max_steps", str(end), "--resume_from_checkpoint", "latest"])

    straight = tmp_path_factory.mktemp("straight")
    _run([*_train_command(checkpoint_dir, data_dir, straight, "--per_device_train_batch_size", "2",
                          "--gradient_accumulation_steps", "2"), "--max_steps", str(end)])
    return {"killed": killed, "straight": straight, "last": last, "end": end, "resumed_log": resumed.stderr}


def test_killed_run_resumes_bit_identical(killed_and_resumed):
    run = killed_and_resumed
    assert f"checkpoint-{run['last']} at step {run['last']}" in run["resumed_log"]
    resumed, straight = _weights(run["killed"]), _weights(run["straight"])
    assert resumed.keys() == straight.keys()
    different = [name for name in straight if not torch.equal(resumed[name], straight[name])]
    assert different == []
    # The resumed steps did train (the weights moved past the checkpoint's), and they trained the stage's parts.
    at_checkpoint = _weights(run["killed"] / f"checkpoint-{run['last']}")
    moved = {name for name in at_checkpoint if not torch.equal(at_checkpoint[name], resumed[name])}
    assert any(name.startswith("model.gen_head.") for name in moved)
    assert any(name.startswith("lm_head") for name in moved)
    assert not any(name.startswith("model.vq_model.") for name in moved)
    # Both runs trained on the same records step by step (the killed run's log also holds the steps it repeated).
    by_step = lambda rows: {(row["step"], row["micro_batch"]): row["record_ids"] for row in rows}
    assert by_step(_samples(run["killed"], 0)) == by_step(_samples(run["straight"], 0))


def test_final_model_loads_in_the_pipelines(killed_and_resumed):
    from transformers import pipeline

    from transformers_janus import JanusProForConditionalGeneration, JanusProImagePipeline

    output_dir = killed_and_resumed["straight"]
    model = JanusProForConditionalGeneration.from_pretrained(output_dir)
    saved = _weights(output_dir)
    assert all(torch.equal(tensor, saved[name]) for name, tensor in model.state_dict().items())
    image_pipeline = JanusProImagePipeline.from_pretrained(output_dir)
    assert torch.equal(image_pipeline.model.lm_head.weight, saved["lm_head.weight"])
    chat = pipeline("image-text-to-text", model=str(output_dir))
    assert torch.equal(chat.model.lm_head.weight, saved["lm_head.weight"])
    # The card records the run: stage, data files (by name), the final losses of train_results.json.
    from huggingface_hub import ModelCard

    card = ModelCard.load(output_dir / "README.md")
    results = json.loads((output_dir / "train_results.json").read_text())
    assert "Janus-Pro stage 3 with `training/train.py`" in card.text
    assert "`understanding.jsonl`" in card.text and "`generation.jsonl`" in card.text
    assert f"| `text_loss` | {results['text_loss']:.6g} |" in card.text
    assert f"| `image_loss` | {results['image_loss']:.6g} |" in card.text
    assert card.data.base_model is None  # trained from the local fixture: no Hub id to name


def test_damaged_checkpoints_are_refused_by_name(killed_and_resumed, tmp_path):
    from accelerate import Accelerator

    from transformers_janus.training.checkpointing import find_latest_checkpoint, load_checkpoint, verify_checkpoint

    source = killed_and_resumed["straight"] / "checkpoint-2"
    assert verify_checkpoint(source)["step"] == 2

    def damaged(name: str, damage) -> Path:
        folder = tmp_path / name / "checkpoint-2"
        shutil.copytree(source, folder)
        damage(folder)
        return folder

    def truncate(file):
        file.write_bytes(file.read_bytes()[:-10])

    def flip_a_byte(file):
        content = bytearray(file.read_bytes())
        content[len(content) // 2] ^= 0xFF
        file.write_bytes(bytes(content))

    cases = {
        "truncated": (lambda f: truncate(f / "optimizer.bin"), r"optimizer.bin has \d+ bytes, its manifest records"),
        "altered": (lambda f: flip_a_byte(f / "model.safetensors"), "model.safetensors does not match its checksum"),
        "missing": (lambda f: (f / "random_states_0.pkl").unlink(), "random_states_0.pkl is missing"),
        "unfinished": (lambda f: (f / "manifest.json").unlink(), "has no manifest.json: it is incomplete"),
    }
    accelerator = Accelerator(cpu=True)
    for name, (damage, message) in cases.items():
        folder = damaged(name, damage)
        with pytest.raises(ValueError, match=message):
            load_checkpoint(accelerator, folder)
    # `latest` skips a folder without a manifest (a save that never finished) for the highest complete one.
    shutil.copytree(source, tmp_path / "unfinished" / "checkpoint-1")
    assert find_latest_checkpoint(tmp_path / "unfinished") == tmp_path / "unfinished" / "checkpoint-1"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(killed_and_resumed, checkpoint_dir, data_dir,
                                                                    tmp_path):
    """
    `torchrun --nproc_per_node 2` (gloo): each rank trains on its own half of every step (2 samples, 1 micro-batch),
    and the weights equal the one-process run that takes the same 4 samples as 2 micro-batches of 2.
    """
    run = killed_and_resumed
    two = tmp_path / "two"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port())]
    command = _train_command(
        checkpoint_dir, data_dir, two, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1"
    )
    _run([*command, "--max_steps", str(run["end"])], launcher=launcher)

    one_process = {(row["step"], row["micro_batch"]): row["record_ids"] for row in _samples(run["straight"], 0)}
    ranks = [{row["step"]: row["record_ids"] for row in _samples(two, rank)} for rank in (0, 1)]
    for step in range(run["end"]):
        assert ranks[0][step] != ranks[1][step]
        assert [ranks[0][step], ranks[1][step]] == [one_process[step, 0], one_process[step, 1]]
    # Both processes' RNG states are in the checkpoint, which verifies against its manifest.
    from transformers_janus.training.checkpointing import verify_checkpoint

    assert verify_checkpoint(two / "checkpoint-2")["step"] == 2
    assert {path.name for path in (two / "checkpoint-2").glob("random_states_*")} == {
        "random_states_0.pkl", "random_states_1.pkl"
    }
    straight, two_weights = _weights(run["straight"]), _weights(two)
    max_diff = max((straight[name] - two_weights[name]).abs().max().item() for name in straight)
    # Measured 0.0 (two summands, the loss scaled by 2 and averaged by 2: exact in fp32); the bound allows another
    # reduction order. A wrong normalisation or a schedule stepped per process moves weights by ~1e-3 here.
    assert max_diff <= 1e-6


# Arguments


def _train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("janus_pro_train", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_scheduler_choices_are_the_library_ones():
    """train.py states its `--lr_scheduler_type` choices without importing torch (a fast `--help`): they must agree."""
    import dataclasses

    from transformers_janus.training.optimization import LR_SCHEDULER_TYPES

    fields = {f.name: f for f in dataclasses.fields(_train_module().StageTrainingArguments)}
    assert tuple(fields["lr_scheduler_type"].metadata["choices"]) == LR_SCHEDULER_TYPES


def test_yaml_config_sets_defaults_and_the_command_line_wins():
    train = _train_module()
    parser = train.make_parser()
    required = ["--model_name_or_path", "m", "--output_dir", "o", "--text_data", "t.jsonl"]
    model_args, data_args, training_args = parser.parse_args_and_config(
        [*required, "--config", str(REPO / "training" / "configs" / "stage1.yaml"), "--learning_rate", "5e-4",
         "--mix_ratio", "1:1:2", "--trainable_modules", "model.gen_head.", "lm_head."]
    )
    stage, learning_rate, warmup_steps, max_steps, mix_ratio = train.stage_settings(data_args, training_args)
    assert (stage.stage, learning_rate, warmup_steps, max_steps, mix_ratio) == (1, 5e-4, 600, 20000, "1:1:2")
    assert (training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps) == (8, 4)
    assert model_args.trainable_modules == ["model.gen_head.", "lm_head."]
    # Without a config, `--stage` alone gives the paper's values.
    _, data_args, training_args = train.make_parser().parse_args_and_config([*required, "--stage", "2"])
    assert train.stage_settings(data_args, training_args)[1:] == (1e-4, 5000, 360000, (2, 3, 5))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--per_device_train_batch_size", "0"], "`--per_device_train_batch_size` must be at least 1, got 0"),
        (["--report_to", "tensorbored"], r"`--report_to` \['tensorbored'\] unknown"),
        (["--mixed_precision", "fp8"], "`--mixed_precision` must be no, bf16 or fp16, got 'fp8'"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments, message):
    train = _train_module()
    parsed = train.make_parser().parse_args_and_config(
        ["--model_name_or_path", "m", "--output_dir", "o", "--text_data", "t.jsonl", *arguments]
    )
    with pytest.raises(ValueError, match=message):
        train.check_arguments(*parsed)


def test_no_data_is_refused():
    train = _train_module()
    parsed = train.make_parser().parse_args_and_config(["--model_name_or_path", "m", "--output_dir", "o"])
    with pytest.raises(ValueError, match="No training data"):
        train.check_arguments(*parsed)


def test_bad_samples_fail_before_training_or_are_skipped(checkpoint_dir, data_dir, tmp_path):
    """A missing image and a too-long sample: named by record id before any step (fail), or dropped and counted (skip)."""
    import shutil

    bad_dir = tmp_path / "data"
    shutil.copytree(data_dir, bad_dir, ignore=shutil.ignore_patterns("vq_codes"))
    records = [json.loads(line) for line in (bad_dir / "understanding.jsonl").read_text().splitlines()]
    records[1]["images"] = ["images/missing.png"]
    records[2]["messages"][1]["content"] = "long " * 200
    (bad_dir / "understanding.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    command = _train_command(checkpoint_dir, bad_dir, tmp_path / "fail", "--max_steps", "2", "--save_steps", "0")
    result = subprocess.run(
        [sys.executable, *command], env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "understanding.jsonl:2" in result.stderr and "understanding.jsonl:3" in result.stderr, result.stderr[-2000:]
    assert "missing.png" in result.stderr and "max_length" in result.stderr
    assert not (tmp_path / "fail" / "train_log.jsonl").exists()  # refused before the first step

    result = _run(
        _train_command(
            checkpoint_dir, bad_dir, tmp_path / "skip", "--max_steps", "2", "--save_steps", "0", "--on_bad_sample", "skip"
        )
    )
    seen = {record_id for row in _samples(tmp_path / "skip", 0) for record_id in row["record_ids"]}
    assert seen and not seen & {"understanding.jsonl:2", "understanding.jsonl:3"}
    assert "understanding.jsonl:2" in result.stderr  # the skipped records are named in the log


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_learning_rate_schedules_warm_up_then_hold_or_decay_to_zero(kind):
    from transformers_janus.training.optimization import create_optimizer_and_scheduler

    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = create_optimizer_and_scheduler(model, 1.0, warmup_steps=2, lr_scheduler_type=kind,
                                                          num_training_steps=10)
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == [0.0, 0.5, 1.0]
    expected_end = {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * 7 / 8)), "linear": 1 / 8}[kind]
    assert rates[-1] == pytest.approx(expected_end)
    assert scheduler.get_last_lr()[0] == pytest.approx(1.0 if kind == "constant" else 0.0)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))


def test_a_decaying_schedule_needs_its_length_and_unknown_schedules_are_refused():
    from transformers_janus.training.optimization import create_optimizer_and_scheduler

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="num_training_steps"):
        create_optimizer_and_scheduler(model, 1.0, 0, lr_scheduler_type="cosine")
    with pytest.raises(ValueError, match="one of"):
        create_optimizer_and_scheduler(model, 1.0, 0, lr_scheduler_type="polynomial")
