"""
What importing the package (or any of its modules) imports, each in a fresh interpreter: the package imports in any
order, `import transformers_janus` and `janus-pro --help` import neither transformers nor torch, the processor imports
no modeling code, and the Auto classes are registered whichever of transformers_janus and transformers comes first.
"""

import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import transformers_janus


SRC_DIR = Path(transformers_janus.__file__).parent.parent
MODULES = sorted(
    info.name for info in pkgutil.walk_packages(transformers_janus.__path__, prefix="transformers_janus.")
)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this checkout's package; fails the test on a non-zero exit."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(SRC_DIR), "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def test_every_module_is_found():
    # Guards the parametrization below against an empty walk (a package path problem would make it vacuous).
    assert {"transformers_janus.registration", "transformers_janus.modeling_janus_pro"} <= set(MODULES)


# A forking server that holds the third-party stack (torch, transformers, diffusers) imported once and never
# transformers_janus: each check forks it and imports one of our modules first in the child. Importing that stack
# took ~10 s per fresh interpreter here (AMD EPYC), 12 of the suite's 23 minutes over the package's modules.
IMPORT_SERVER = """
import importlib, json, os, sys, traceback
import torch, transformers, diffusers
from transformers import GenerationMixin, LlamaForCausalLM, PreTrainedModel, SiglipVisionModel  # noqa: F401
from diffusers import DiffusionPipeline, VQModel  # noqa: F401
assert not [name for name in sys.modules if name.startswith("transformers_janus")]
print("ready", flush=True)
for line in sys.stdin:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(line.strip())
            import transformers_janus
            for name in transformers_janus.__all__:
                getattr(transformers_janus, name)
            message = "ok"
        except BaseException:
            message = traceback.format_exc()
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    reply = b"".join(chunks).decode() or f"the child died (wait status {status})"
    print(json.dumps(reply), flush=True)
"""


@pytest.fixture(scope="module")
def import_server():
    if not hasattr(os, "fork"):
        yield None
        return
    server = subprocess.Popen(
        [sys.executable, "-c", IMPORT_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC_DIR), "HF_HUB_OFFLINE": "1"},
    )
    assert server.stdout.readline().strip() == "ready"
    yield server
    server.stdin.close()
    server.wait(timeout=60)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_first(module, import_server):
    """No import circle: every module imports first of the package (in a fresh child), then the whole public API."""
    if import_server is None:  # no fork: a fresh interpreter each
        run_python(
            """
            import importlib, sys
            importlib.import_module(sys.argv[1])
            import transformers_janus
            for name in transformers_janus.__all__:
                getattr(transformers_janus, name)
            """,
            module,
        )
        return
    import json

    import_server.stdin.write(module + "\n")
    import_server.stdin.flush()
    assert json.loads(import_server.stdout.readline()) == "ok"


def test_package_import_is_cheap():
    completed = run_python(
        """
        import sys
        import transformers_janus
        print(sorted(name for name in ("transformers", "torch", "diffusers", "PIL", "numpy") if name in sys.modules))
        assert set(transformers_janus.__all__) <= set(dir(transformers_janus))
        """
    )
    assert completed.stdout.strip() == "[]"


def test_cli_help_imports_no_library():
    completed = run_python(
        """
        import runpy, sys
        sys.argv = ["janus-pro", "--help"]
        try:
            runpy.run_module("transformers_janus.cli", run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        print(sorted(name for name in ("transformers", "torch", "diffusers") if name in sys.modules))
        """
    )
    assert "usage: janus-pro" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        transformers_janus.NotAThing  # noqa: B018


def test_processor_imports_no_modeling_code():
    completed = run_python(
        """
        import sys
        import transformers_janus.processing_janus_pro
        from transformers import AutoProcessor  # registration with the Auto modules imports no modeling code either
        heavy = ("transformers_janus.modeling_janus_pro", "transformers.models.llama.modeling_llama", "diffusers")
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    assert completed.stdout.strip() == "[]"


CHECK_REGISTRATION = """
from transformers import TokenizersBackend
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, MODEL_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

from transformers_janus.configuration_janus_pro import JanusProConfig
from transformers_janus.deepseek_format import DeepSeekJanusConfig
from transformers_janus.image_processing_janus_pro import JanusProImageProcessor
from transformers_janus.processing_janus_pro import JanusProProcessor

assert CONFIG_MAPPING["janus_pro"] is JanusProConfig
assert CONFIG_MAPPING["multi_modality"] is DeepSeekJanusConfig
assert PROCESSOR_MAPPING[JanusProConfig] is JanusProProcessor
assert issubclass(PROCESSOR_MAPPING[DeepSeekJanusConfig], JanusProProcessor)
assert TOKENIZER_MAPPING[JanusProConfig] is TokenizersBackend
assert IMAGE_PROCESSOR_MAPPING[JanusProConfig]["pil"] is JanusProImageProcessor
# The model mappings hold the stand-in until the modeling module is imported.
assert "transformers_janus.modeling_janus_pro" not in sys.modules
assert MODEL_MAPPING[JanusProConfig].__name__ == "JanusProForConditionalGeneration"
assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[JanusProConfig].config_class is JanusProConfig
assert "transformers_janus.modeling_janus_pro" not in sys.modules
"""


@pytest.mark.parametrize(
    "first",
    ["import transformers_janus", "import transformers.models.auto.modeling_auto, transformers.models.auto.processing_auto"],
)
def test_registration_in_either_import_order(first):
    run_python(f"import sys\n{first}\nimport transformers_janus\n{CHECK_REGISTRATION}")


def test_register_auto_classes_imports_the_auto_modules():
    run_python(
        """
        import sys
        from transformers_janus import register_auto_classes
        register_auto_classes()
        from transformers.models.auto.modeling_auto import MODEL_MAPPING
        from transformers_janus.configuration_janus_pro import JanusProConfig
        assert MODEL_MAPPING[JanusProConfig].config_class is JanusProConfig
        """
    )


def test_auto_model_loads_through_the_stand_in(checkpoint_dir):
    """`AutoModelForImageTextToText` loads the real class on first use and the mappings then hold it."""
    run_python(
        """
        import sys
        import transformers_janus
        from transformers import AutoModel, AutoModelForImageTextToText
        from transformers.models.auto.modeling_auto import MODEL_MAPPING, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

        assert "transformers_janus.modeling_janus_pro" not in sys.modules
        model = AutoModelForImageTextToText.from_pretrained(sys.argv[1])
        from transformers_janus import JanusProConfig, JanusProForConditionalGeneration
        assert type(model) is JanusProForConditionalGeneration, type(model)
        assert MODEL_MAPPING[JanusProConfig] is JanusProForConditionalGeneration
        assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[JanusProConfig] is JanusProForConditionalGeneration
        assert type(AutoModel.from_config(model.config)) is JanusProForConditionalGeneration
        """,
        str(checkpoint_dir),
    )
