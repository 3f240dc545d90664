import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Remote code that tests load with `trust_remote_code=True` is copied here, not into the user's cache.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="janus-pro-modules-"))

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "janus-pro-tiny-original"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def checkpoint_dir() -> Path:
    """The tiny checkpoint exactly as DeepSeek's code writes it (`model_type: multi_modality`)."""
    return FIXTURE_DIR / "checkpoint"


@pytest.fixture(scope="session")
def golden():
    from safetensors.torch import load_file

    return load_file(FIXTURE_DIR / "golden.safetensors")


@pytest.fixture(scope="session")
def golden_meta() -> dict:
    return json.loads((FIXTURE_DIR / "golden.json").read_text())


@pytest.fixture(scope="module")
def model(checkpoint_dir):
    """The fixture checkpoint loaded straight from DeepSeek's format, fp32, eval mode."""
    from transformers_janus import JanusProForConditionalGeneration

    return JanusProForConditionalGeneration.from_pretrained(checkpoint_dir).eval()


@pytest.fixture(scope="session")
def left_padded_image_prompts(checkpoint_dir, golden):
    """The fixture's text-to-image prompt and a shorter one, left-padded into one batch: (ids, mask, [long, short])."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    short = torch.tensor(tokenizer("<|User|>: a cat\n\n<|Assistant|>:<begin_of_image>").input_ids)
    long = golden["gen.prompt_ids"]
    batch = torch.full((2, len(long)), tokenizer.pad_token_id)
    mask = torch.zeros_like(batch)
    batch[0], mask[0] = long, 1
    batch[1, -len(short) :], mask[1, -len(short) :] = short, 1
    return batch, mask, [long, short]
