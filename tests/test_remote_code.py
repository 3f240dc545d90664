"""
Saved directories load without this package: `save_pretrained` writes `auto_map` and copies the code, so the Auto
classes with `trust_remote_code=True` give the same model, processor and answers where `transformers_janus` is absent.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor

from transformers_janus import JanusProConfig


CODE_FILES = {
    "configuration_janus_pro.py",
    "deepseek_format.py",
    "image_generation.py",
    "image_processing_janus_pro.py",
    "modeling_janus_pro.py",
    "processing_janus_pro.py",
}
# What the copied code may import besides the standard library: the package's own dependencies.
ALLOWED_IMPORTS = {"transformers", "diffusers", "torch", "safetensors", "PIL", "numpy", "huggingface_hub"}
# Imported only inside the functions that need them (the pipeline's LoRA methods need peft), never at module level
OPTIONAL_IMPORTS = {"peft"}
MODEL_CLASS = "modeling_janus_pro.JanusProForConditionalGeneration"
TEXT_QUESTION = "What color is the ball?"
MAX_NEW_TOKENS = 12

# Run in a fresh interpreter where `transformers_janus` cannot be imported, driven as lmms-eval's generic HF chat model
# drives a model: Auto classes with `trust_remote_code=True`, chat template, one padded batch, greedy `generate`.
REMOTE_SCRIPT = r"""
import importlib.abc
import json
import os
import sys


class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers_janus":
            raise ImportError(f"{name} is blocked in this test")


sys.meta_path.insert(0, BlockPackage())
sys.path = [entry for entry in sys.path if not os.path.isdir(os.path.join(entry or ".", "transformers_janus"))]
try:
    import transformers_janus  # noqa: F401
except ImportError:
    package_importable = False
else:
    package_importable = True

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

directory, image_path, question, text_question, resave_directory, max_new_tokens = sys.argv[1:7]
config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
auto_model = AutoModel.from_pretrained(directory, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)
image_processor = AutoImageProcessor.from_pretrained(directory, trust_remote_code=True)

conversations = [
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
    [{"role": "user", "content": [{"type": "text", "text": text_question}]}],
]
prompts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
inputs = processor(
    text=prompts, images=[Image.open(image_path).convert("RGB")], padding=True, return_tensors="pt"
)
with torch.no_grad():
    output = model.generate(
        **inputs,
        do_sample=False,
        temperature=None,
        top_p=None,
        num_beams=1,
        max_new_tokens=int(max_new_tokens),
        eos_token_id=processor.tokenizer.eos_token_id,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
new_tokens = output[:, inputs["input_ids"].shape[1] :]
answers = processor.batch_decode(new_tokens, skip_special_tokens=True)

# A directory saved by the remote code is again loadable without the package.
model.save_pretrained(resave_directory)
processor.save_pretrained(resave_directory)

classes = {
    "config": type(config),
    "auto_model": type(auto_model),
    "model": type(model),
    "processor": type(processor),
    "image_processor": type(image_processor),
    "processor_image_processor": type(processor.image_processor),
    "tokenizer": type(tokenizer),
}
result = {
    "package_importable": package_importable,
    "janus_modules": sorted(name for name in sys.modules if name.split(".")[0] == "transformers_janus"),
    "classes": {key: [cls.__module__, cls.__name__] for key, cls in classes.items()},
    "prompts": prompts,
    "input_ids": inputs["input_ids"].tolist(),
    "new_tokens": new_tokens.tolist(),
    "answers": answers,
}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def saved_dir(model, checkpoint_dir, tmp_path_factory) -> Path:
    """The fixture model and processor, loaded from DeepSeek's format and saved as this package saves them."""
    directory = tmp_path_factory.mktemp("remote-code") / "janus-pro-tiny"
    model.save_pretrained(directory)
    AutoProcessor.from_pretrained(checkpoint_dir).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def conversations(golden_meta) -> list:
    return [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": golden_meta["und_question"]}]}],
        [{"role": "user", "content": [{"type": "text", "text": TEXT_QUESTION}]}],
    ]


@pytest.fixture(scope="module")
def remote_result(saved_dir, fixture_dir, golden_meta, tmp_path_factory) -> dict:
    work_dir = tmp_path_factory.mktemp("remote-run")  # a cwd where `src/` is not on the path
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work_dir / "modules"), TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            REMOTE_SCRIPT,
            str(saved_dir),
            str(fixture_dir / "und_image.png"),
            golden_meta["und_question"],
            TEXT_QUESTION,
            str(work_dir / "resaved"),
            str(MAX_NEW_TOKENS),
        ],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        pytest.fail(f"The remote-code run failed (exit {completed.returncode}):\n{completed.stderr[-6000:]}")
    return {**json.loads(lines[-1][len("RESULT ") :]), "resaved": work_dir / "resaved"}


def _auto_maps(directory: Path) -> dict:
    config = json.loads((directory / "config.json").read_text())
    processor = json.loads((directory / "processor_config.json").read_text())
    return {
        "model": config.get("auto_map"),
        "processor": processor.get("auto_map"),
        "image_processor": processor["image_processor"].get("auto_map"),
    }


def test_saved_directory_holds_auto_map_and_code(saved_dir):
    auto_maps = _auto_maps(saved_dir)
    assert auto_maps["model"] == {
        "AutoConfig": "configuration_janus_pro.JanusProConfig",
        "AutoModel": MODEL_CLASS,
        "AutoModelForImageTextToText": MODEL_CLASS,
    }
    assert auto_maps["processor"] == {"AutoProcessor": "processing_janus_pro.JanusProProcessor"}
    assert auto_maps["image_processor"]["AutoImageProcessor"] == "image_processing_janus_pro.JanusProImageProcessor"
    assert CODE_FILES <= {path.name for path in saved_dir.glob("*.py")}


def test_copied_code_needs_only_the_package_dependencies(saved_dir):
    _check_imports_only_dependencies(saved_dir)


def _check_imports_only_dependencies(directory: Path):
    code_files = {path.name: path for path in directory.glob("*.py")}
    for name, path in code_files.items():
        tree = ast.parse(path.read_text(), filename=name)
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 1, f"{name}: `from {'.' * node.level}{node.module} import` leaves the directory"
                assert f"{node.module}.py" in code_files, f"{name} imports .{node.module}, which was not copied"
                continue
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                optional = top in OPTIONAL_IMPORTS and id(node) not in module_level
                assert top in ALLOWED_IMPORTS or top in sys.stdlib_module_names or optional, f"{name} imports {module}"


def test_with_the_package_the_saved_directory_uses_its_classes(saved_dir):
    # Without `trust_remote_code` the registered classes win over the copied code.
    assert type(AutoConfig.from_pretrained(saved_dir)) is JanusProConfig


def test_loads_without_the_package(remote_result):
    assert remote_result["package_importable"] is False
    assert remote_result["janus_modules"] == []
    classes = remote_result["classes"]
    assert classes["auto_model"][1] == "JanusProForConditionalGeneration"
    assert classes["model"][1] == "JanusProForConditionalGeneration"
    assert classes["config"][1] == "JanusProConfig"
    assert classes["processor"][1] == "JanusProProcessor"
    assert classes["image_processor"][1] == classes["processor_image_processor"][1] == "JanusProImageProcessor"
    assert classes["tokenizer"] == ["transformers.tokenization_utils_tokenizers", "TokenizersBackend"]
    for key in ("config", "auto_model", "model", "processor", "image_processor"):
        assert classes[key][0].startswith("transformers_modules."), (key, classes[key])


def test_answers_without_the_package_as_with_it(
    remote_result, model, saved_dir, conversations, golden, golden_meta, fixture_dir
):
    assert remote_result["new_tokens"][0] == golden["und.greedy_new_tokens"].tolist()
    assert remote_result["answers"][0] == golden_meta["und_greedy_text"]

    processor = AutoProcessor.from_pretrained(saved_dir)
    prompts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    image = Image.open(fixture_dir / "und_image.png").convert("RGB")
    inputs = processor(text=prompts, images=[image], padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=processor.tokenizer.eos_token_id,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    assert remote_result["prompts"] == prompts
    assert remote_result["input_ids"] == inputs["input_ids"].tolist()
    assert remote_result["new_tokens"] == new_tokens.tolist()
    assert remote_result["answers"] == processor.batch_decode(new_tokens, skip_special_tokens=True)


def test_resaved_without_the_package_stays_loadable(remote_result, saved_dir):
    assert _auto_maps(remote_result["resaved"]) == _auto_maps(saved_dir)
    assert CODE_FILES <= {path.name for path in remote_result["resaved"].glob("*.py")}


def test_saved_model_card_says_how_to_load_without_the_package(model, tmp_path):
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "trust_remote_code=True" in card and "`transformers`, `diffusers` and `torch`" in card
    (tmp_path / "README.md").write_text("my own card")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my own card"


# ------------------------------------------------------------------------------------------------------------------
# A saved JanusProImagePipeline, loaded by diffusers' generic loader where the package cannot be imported

PIPELINE_PROMPT = "a red square on the left of a blue circle"

REMOTE_PIPELINE_SCRIPT = REMOTE_SCRIPT[: REMOTE_SCRIPT.index("import torch\n")] + r"""
import torch
from diffusers import DiffusionPipeline

directory, prompt, resave_directory = sys.argv[1:4]
pipe = DiffusionPipeline.from_pretrained(directory, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)


def tokens(pipeline):
    return pipeline(prompt, generator=torch.Generator().manual_seed(3), output_type="latent").images.tolist()


first = tokens(pipe)
pixels = pipe(prompt, generator=torch.Generator().manual_seed(3), output_type="np").images
pipe.save_pretrained(resave_directory)
again = DiffusionPipeline.from_pretrained(resave_directory, trust_remote_code=True)
again.set_progress_bar_config(disable=True)
result = {
    "package_importable": package_importable,
    "janus_modules": sorted(name for name in sys.modules if name.split(".")[0] == "transformers_janus"),
    "classes": {
        key: [type(value).__module__, type(value).__name__]
        for key, value in {"pipeline": pipe, "model": pipe.model, "processor": pipe.processor}.items()
    },
    "tokens": first,
    "pixels_shape": list(pixels.shape),
    "pixels_dtype": str(pixels.dtype),
    "resaved_tokens": tokens(again),
}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def saved_pipeline_dir(checkpoint_dir, tmp_path_factory) -> Path:
    from transformers_janus import JanusProImagePipeline

    directory = tmp_path_factory.mktemp("remote-pipeline") / "janus-pro-tiny-pipeline"
    JanusProImagePipeline.from_pretrained(checkpoint_dir).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def remote_pipeline_result(saved_pipeline_dir, tmp_path_factory) -> dict:
    work_dir = tmp_path_factory.mktemp("remote-pipeline-run")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work_dir / "modules"), TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_PIPELINE_SCRIPT, str(saved_pipeline_dir), PIPELINE_PROMPT, str(work_dir / "resaved")],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        pytest.fail(f"The remote-code pipeline run failed (exit {completed.returncode}):\n{completed.stderr[-6000:]}")
    return {**json.loads(lines[-1][len("RESULT ") :]), "stderr": completed.stderr}


def test_saved_pipeline_code_needs_only_the_package_dependencies(saved_pipeline_dir):
    # The loader module, the pipeline's module and what they import sit at the top; each component carries its own.
    assert {"pipeline.py", "pipeline_janus_pro.py", "packaging.py", "modeling_janus_pro.py"} <= {
        path.name for path in saved_pipeline_dir.glob("*.py")
    }
    for directory in (saved_pipeline_dir, saved_pipeline_dir / "model", saved_pipeline_dir / "processor"):
        _check_imports_only_dependencies(directory)


def test_saved_pipeline_loads_without_the_package(remote_pipeline_result, saved_pipeline_dir, checkpoint_dir):
    from transformers_janus import JanusProImagePipeline

    assert remote_pipeline_result["package_importable"] is False
    assert remote_pipeline_result["janus_modules"] == []
    classes = remote_pipeline_result["classes"]
    assert classes == {
        "pipeline": [classes["pipeline"][0], "JanusProImagePipeline"],
        "model": [classes["model"][0], "JanusProForConditionalGeneration"],
        "processor": [classes["processor"][0], "JanusProProcessor"],
    }
    assert all(module.startswith("diffusers_modules.") for module, _ in classes.values()), classes
    assert "Expected types" not in remote_pipeline_result["stderr"]  # diffusers' component type check holds

    pipe = JanusProImagePipeline.from_pretrained(checkpoint_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(PIPELINE_PROMPT, generator=torch.Generator().manual_seed(3), output_type="latent").images
    assert remote_pipeline_result["tokens"] == expected.tolist()
    assert remote_pipeline_result["pixels_shape"] == [1, 64, 64, 3] and remote_pipeline_result["pixels_dtype"] == "float32"
    # Saved again by the remote code, the folder is again loadable without the package.
    assert remote_pipeline_result["resaved_tokens"] == expected.tolist()
