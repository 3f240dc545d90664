"""Every Python block of the user docs runs, in order, on the bundled tiny checkpoint."""

import re
import shutil
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).parent.parent / "docs"
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture
def run_doc(checkpoint_dir, fixture_dir, tmp_path, monkeypatch):
    """Execute a doc's Python blocks in one namespace, in a scratch directory holding the fixture image as `cat.png`,
    with the real model id swapped for the fixture checkpoint."""

    def run(name: str) -> dict:
        blocks = FENCE.findall((DOCS / name).read_text())
        assert blocks, f"{name} has no Python blocks"
        shutil.copy(fixture_dir / "und_image.png", tmp_path / "cat.png")
        monkeypatch.chdir(tmp_path)
        namespace = {}
        for block in blocks:
            code = block.replace('"deepseek-ai/Janus-Pro-1B"', repr(str(checkpoint_dir)))
            exec(compile(code, name, "exec"), namespace)
        return namespace

    return run


def test_usage_doc_runs(run_doc, capsys):
    namespace = run_doc("usage.md")
    assert "JanusProForConditionalGeneration JanusProProcessor" in capsys.readouterr().out
    # The greedy chat answer, the pipeline's answer to the same question and the reloaded model agree.
    assert namespace["result"][0]["generated_text"][-1]["content"] == namespace["answer"]
    assert len(namespace["answers"]) == 2 and all(isinstance(answer, str) for answer in namespace["answers"])
    assert type(namespace["reloaded"]) is type(namespace["model"])


def test_conversion_doc_runs(run_doc):
    namespace = run_doc("conversion.md")
    assert type(namespace["builtin"]).__name__ == "JanusForConditionalGeneration"
    assert type(namespace["builtin_model"]).__name__ == "JanusForConditionalGeneration"
    restored, model = namespace["restored"].state_dict(), namespace["model"].state_dict()
    assert restored.keys() == model.keys()
    assert type(namespace["remote_model"]).__name__ == "JanusProForConditionalGeneration"


def test_generation_doc_runs(run_doc, tmp_path):
    namespace = run_doc("generation.md")
    assert (tmp_path / "apple.png").exists()
    assert len(namespace["images"]) == 8
    assert type(namespace["generic"]).__name__ == "JanusProImagePipeline"
    assert len(namespace["pictures"]) == 1 and len(namespace["variation"]) == 1
    assert torch.equal(namespace["fast"].image_tokens, namespace["output"].image_tokens)  # what the Speed section says
    assert namespace["reason"] is not None or len(namespace["prepacked_images"]) == 1


def test_readme_python_blocks_run(run_doc):
    namespace = run_doc("../README.md")
    assert type(namespace["chat"]).__name__ == "ImageTextToTextPipeline"
    assert len(namespace["images"]) == 4 and all(image.size == (64, 64) for image in namespace["images"])


def test_training_doc_data_examples_are_valid_records(checkpoint_dir, tmp_path):
    """The JSONL records docs/training.md shows (it has no Python blocks) load as their kind, pass the up-front
    check, and supervise the answers they show."""
    import importlib.util
    import json

    from transformers_janus import JanusProProcessor
    from transformers_janus.training.data import JanusProSampleEncoder, check_samples, load_samples

    spec = importlib.util.spec_from_file_location("loss_curve", DOCS.parent / "training" / "examples" / "loss_curve.py")
    loss_curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loss_curve)
    loss_curve.make_data(tmp_path)  # the images the examples name (images/red_circle.png, ...)
    blocks = re.findall(r"```json\n(.*?)```", (DOCS / "training.md").read_text(), re.DOTALL)
    by_kind = {}
    for block in blocks:
        first = json.loads(block.splitlines()[0])
        kind = "generation" if "caption" in first else "understanding" if "images" in first else "text"
        if "messages" in first or "caption" in first:
            by_kind[kind] = block
    assert sorted(by_kind) == ["generation", "text", "understanding"]
    processor = JanusProProcessor.from_pretrained(checkpoint_dir)
    encoder = JanusProSampleEncoder(processor, max_length=4096, cfg_drop_prob=0.0)
    datasets_by_kind = {}
    for kind, block in by_kind.items():
        (tmp_path / f"doc_{kind}.jsonl").write_text(block)
        datasets_by_kind[kind] = load_samples(tmp_path / f"doc_{kind}.jsonl", kind)
    checked = check_samples(datasets_by_kind, encoder, on_bad_sample="fail")
    assert {kind: len(dataset) for kind, dataset in checked.items()} == {"understanding": 2, "text": 1, "generation": 1}
    supervised = []
    for record in [*checked["understanding"], *checked["text"]]:
        labels = encoder.encode(record)["labels"]
        supervised.append(processor.tokenizer.decode(labels[labels != -100], skip_special_tokens=True))
    assert supervised == [" A red circle.", " Blue stripes.", " 3 plus 4 is 7."]
    assert checked["generation"][0]["caption"] == "a red circle"


def test_finetuning_doc_commands_run(checkpoint_dir, fixture_dir, tmp_path):
    """Every `python training/...` command of the doc, as written and in order, on the fixture and a few records (the
    training runs cut to one step, on the CPU in float32)."""
    import json
    import os
    import shlex
    import subprocess
    import sys

    repo = DOCS.parent
    blocks = re.findall(r"```bash\n(.*?)```", (DOCS / "finetuning.md").read_text(), re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line) for line in lines if line.startswith("python training/")]
    assert [command[1] for command in commands] == ["training/sft_trl.py"] * 3 + [
        "training/train.py", "training/examples/lora_grid.py", "training/train.py", "training/examples/lora_grid.py"
    ]
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "docs" / "images").mkdir(parents=True)
    for name in ("und_image.png", "vq_image.png"):
        shutil.copy(fixture_dir / name, data / name)
    understanding = [
        {"messages": [{"role": "user", "content": "<image_placeholder>\nWhat is it?"}, {"role": "assistant", "content": "A cat."}], "images": ["und_image.png"]},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]},
    ]
    generation = [{"caption": "a cat", "image": "und_image.png"}, {"caption": "a square", "image": "vq_image.png"}]
    for name, records in (("understanding", understanding), ("generation", generation), ("style", generation)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    one_step = {
        "training/sft_trl.py": ["--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none",
                                "--save_strategy", "no"],
        "training/train.py": ["--max_steps", "1", "--per_device_train_batch_size", "2", "--save_steps", "0",
                              "--mixed_precision", "no", "--gradient_checkpointing", "false", "--use_cpu"],
    }
    env = dict(os.environ, PYTHONPATH=str(repo / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    fixture = "tests/fixtures/janus-pro-tiny-original/checkpoint"
    for command in commands:
        script = command[1]
        arguments = [
            str(checkpoint_dir) if value in ("deepseek-ai/Janus-Pro-1B", fixture) else value for value in command[2:]
        ]
        arguments = [str(repo / value) if value.startswith("training/configs/") else value for value in arguments]
        arguments += one_step.get(script, []) + (["--gradient_accumulation_steps", "1"] if script in one_step else [])
        result = subprocess.run(
            [sys.executable, str(repo / script), *arguments], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{script} {arguments}: {result.stderr[-3000:]}"
        if "--output_dir" in arguments:
            output_dir = tmp_path / arguments[arguments.index("--output_dir") + 1]
            # LoRA runs (`--use_peft`, or `use_peft: true` in their YAML) save the adapter, the others the model
            weights = "adapter_model.safetensors" if "lora" in output_dir.name else "model.safetensors"
            assert (output_dir / weights).is_file() and "janus-pro" in (output_dir / "README.md").read_text()
    assert (tmp_path / "docs" / "images" / "lora_before_after.png").is_file()
