"""
`push_to_hub` of the model, the processor, a PEFT adapter and the pipeline, through the whole upload path of
huggingface_hub against a local stub of the Hub (tests/hub_stub.py): the exact files uploaded and the card we wrote.
"""

import json
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hub_stub import UNAUTHENTICATED, HubStub
from transformers_janus import JanusProForConditionalGeneration, JanusProImagePipeline, JanusProProcessor
from transformers_janus.model_card import (
    TrainingSummary,
    build_model_card,
    push_adapter_to_hub,
    resolve_base_model,
    write_model_card,
)


BASE_ID = "deepseek-ai/Janus-Pro-1B"
MODEL_TAGS = ["janus-pro", "custom_code", "image-text-to-text", "text-to-image"]


@pytest.fixture
def token() -> str:
    return f"hf_stub{secrets.token_hex(12)}"


@pytest.fixture
def hub(monkeypatch, token, tmp_path):
    """
    The stub, serving on 127.0.0.1, as the Hub huggingface_hub talks to. huggingface_hub reads `HF_ENDPOINT` and
    `HF_HUB_OFFLINE` once, at import (`huggingface_hub.constants`; conftest set offline mode), and builds its module
    level `HfApi` (diffusers' `create_repo`/`upload_folder`) and transformers its shared one with that endpoint: those are
    patched for this test only.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api
    import transformers.utils.hub

    stub = HubStub().start()
    monkeypatch.setenv("HF_ENDPOINT", stub.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
    monkeypatch.setattr(constants, "ENDPOINT", stub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", stub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", stub.endpoint)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    yield stub
    stub.stop()


@pytest.fixture
def logs(caplog):
    """Every record of huggingface_hub, transformers and this package, down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    for name in ("huggingface_hub", "transformers", "transformers_janus", "diffusers"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def hub_model(model, monkeypatch):
    """The fixture model as `from_pretrained("deepseek-ai/Janus-Pro-1B")` leaves it: its config names that source."""
    monkeypatch.setattr(model.config, "_name_or_path", BASE_ID)
    return model


@pytest.fixture(scope="module")
def processor(checkpoint_dir):
    return JanusProProcessor.from_pretrained(checkpoint_dir)


def local_files(directory) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def card_of(files: dict[str, bytes], path: str = "README.md") -> ModelCard:
    return ModelCard(files[path].decode())


def assert_same_upload_as_saved(uploaded: dict[str, bytes], saved: dict[str, bytes]):
    """What was uploaded is exactly what `save_pretrained` writes, byte for byte, except the root card."""
    assert sorted(uploaded) == sorted(saved)
    assert {path for path in saved if uploaded[path] != saved[path]} <= {"README.md"}


def assert_no_token_anywhere(hub, token, logs, capsys):
    """Every request authenticated with the token, and none of it in any file uploaded, the logs or the output."""
    uploads = [(path, auth) for _, path, auth in hub.state.requests if path not in UNAUTHENTICATED]
    assert uploads and all(auth == f"Bearer {token}" for _, auth in uploads)
    for repo_id, files in hub.state.repos.items():
        for path, content in files.items():
            assert token.encode() not in content, f"{repo_id}/{path} holds the token"
    assert token not in logs.text
    captured = capsys.readouterr()
    assert token not in captured.out and token not in captured.err


# ------------------------------------------------------------------------------------------------------------------
# The model


def test_model_push_uploads_the_saved_files_with_our_card(hub, hub_model, token, logs, capsys, tmp_path):
    commit = hub_model.push_to_hub("janus-tiny", token=token)
    assert hub.state.unexpected == []
    assert [(c.repo_id, c.summary) for c in hub.state.commits] == [("stub-user/janus-tiny", "Upload model")]
    assert commit.oid == commit.commit_url.rsplit("/", 1)[-1]

    hub_model.save_pretrained(tmp_path)
    uploaded = hub.state.repos["stub-user/janus-tiny"]
    assert_same_upload_as_saved(uploaded, local_files(tmp_path))
    assert {"README.md", "config.json", "model.safetensors", "modeling_janus_pro.py", "model_card.py"} <= set(uploaded)

    card = card_of(uploaded)
    assert card.data.base_model == BASE_ID
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-text-to-text"
    assert card.data.tags == MODEL_TAGS
    assert "<!-- transformers-janus card: model -->" in card.text
    assert f"Base model: [{BASE_ID}](https://huggingface.co/{BASE_ID})." in card.text
    assert 'AutoModelForImageTextToText.from_pretrained("stub-user/janus-tiny")' in card.text
    assert 'AutoModelForImageTextToText.from_pretrained("stub-user/janus-tiny", trust_remote_code=True)' in card.text
    assert 'AutoProcessor.from_pretrained("stub-user/janus-tiny", trust_remote_code=True)' in card.text
    # The saved folder's own card is the same card, with a placeholder where the repository id goes.
    assert (tmp_path / "README.md").read_text() == str(card).replace("stub-user/janus-tiny", "path/to/this/folder").replace(
        "# janus-tiny", "# Janus-Pro"
    )
    assert_no_token_anywhere(hub, token, logs, capsys)


def test_model_then_processor_into_one_repo_keeps_the_model_card(hub, hub_model, processor, token, logs, capsys, tmp_path):
    hub_model.push_to_hub("me/janus-tiny", token=token, tags=["my-tag"])
    model_card = hub.state.repos["me/janus-tiny"]["README.md"]
    processor.push_to_hub("me/janus-tiny", token=token)
    assert hub.state.unexpected == []
    assert [c.summary for c in hub.state.commits] == ["Upload model", "Upload processor"]

    processor.save_pretrained(tmp_path)
    assert_same_upload_as_saved(
        {path: content for path, content in hub.state.commits[1].files.items() if path != "README.md"},
        local_files(tmp_path),
    )
    assert hub.state.commits[1].files["README.md"] == model_card
    assert card_of(hub.state.repos["me/janus-tiny"]).data.tags == [*MODEL_TAGS, "my-tag"]
    assert_no_token_anywhere(hub, token, logs, capsys)


def test_processor_alone_gets_a_processor_card(hub, processor, checkpoint_dir, token, logs, capsys):
    processor.push_to_hub("me/janus-processor", token=token)
    card = card_of(hub.state.repos["me/janus-processor"])
    assert "<!-- transformers-janus card: processor -->" in card.text
    assert card.data.base_model is None  # loaded from a local DeepSeek folder: no Hub id to name
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-text-to-text"
    assert "Base model: a local checkpoint (`checkpoint`)." in card.text
    assert str(checkpoint_dir.parent) not in card.text  # a card is public: only the folder's name
    assert 'AutoProcessor.from_pretrained("me/janus-processor", trust_remote_code=True)' in card.text
    assert "AutoModelForImageTextToText" not in card.text
    assert_no_token_anywhere(hub, token, logs, capsys)


def test_a_card_someone_wrote_is_kept(hub, hub_model, token):
    hub.state.repos["me/kept"] = {"README.md": b"---\nlicense: mit\n---\n\n# My model\n\nMy own words.\n"}
    hub_model.push_to_hub("me/kept", token=token)
    card = card_of(hub.state.repos["me/kept"])
    assert card.text.strip() == "# My model\n\nMy own words."
    assert card.data.license == "mit"
    assert card.data.base_model == BASE_ID and card.data.library_name == "transformers"
    assert card.data.tags == MODEL_TAGS


def test_save_pretrained_push_to_hub_keeps_our_card(hub, hub_model, token, tmp_path):
    hub_model.save_pretrained(tmp_path / "janus-saved", push_to_hub=True, token=token)
    uploaded = hub.state.repos["stub-user/janus-saved"]
    assert_same_upload_as_saved(uploaded, local_files(tmp_path / "janus-saved"))
    assert card_of(uploaded).data.base_model == BASE_ID


def test_base_model_survives_save_and_reload(hub_model, tmp_path):
    """A model reloaded from a local folder we saved still names the Hub id the weights first came from."""
    hub_model.save_pretrained(tmp_path / "first")
    reloaded = JanusProForConditionalGeneration.from_pretrained(tmp_path / "first")
    assert reloaded.config._name_or_path == str(tmp_path / "first")
    assert resolve_base_model(reloaded.config._name_or_path) == BASE_ID
    reloaded.save_pretrained(tmp_path / "second")
    assert card_of(local_files(tmp_path / "second")).data.base_model == BASE_ID


def test_local_source_names_no_base_model_and_the_hub_refuses_paths(hub, model, token, tmp_path):
    """A model from a local DeepSeek folder has no Hub id: the card names none, which the Hub accepts; a path as
    `base_model` is refused before anything is written (the stub refuses it as the Hub's validate-yaml does)."""
    from huggingface_hub import HfApi

    model.push_to_hub("me/local", token=token)
    assert card_of(hub.state.repos["me/local"]).data.base_model is None
    with pytest.raises(ValueError, match="`base_model` must be a Hub model id"):
        build_model_card("model", base_model=str(tmp_path))
    with pytest.raises(ValueError, match='"base_model" with value "/data/janus" is not valid'):
        HfApi().upload_file(
            path_or_fileobj=b"---\nbase_model: /data/janus\n---\n", path_in_repo="README.md", repo_id="me/local", token=token
        )


def test_offline_mode_refuses_the_push(model, token, monkeypatch):
    """Without the fixture (conftest's `HF_HUB_OFFLINE=1`), a push fails before any request."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    stub = HubStub().start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", stub.endpoint)
        with pytest.raises(OfflineModeIsEnabled):
            model.push_to_hub("me/offline", token=token)
        assert stub.state.requests == []
    finally:
        stub.stop()


# ------------------------------------------------------------------------------------------------------------------
# Adapters


@pytest.fixture
def adapter(checkpoint_dir):
    peft = pytest.importorskip("peft")
    base = JanusProForConditionalGeneration.from_pretrained(checkpoint_dir)  # LoRA wraps in place: a fresh model
    base.config._name_or_path = BASE_ID
    return peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)"))


def test_adapter_push_uploads_the_adapter_with_our_card(hub, adapter, token, logs, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", token)  # as `hf auth login` leaves it: the token in use, found by huggingface_hub
    summary = TrainingSummary(
        method="LoRA SFT with `training/sft_trl.py`",
        datasets=["HuggingFaceM4/ChartQA", str(tmp_path / "conversations.jsonl")],
        arguments={"learning_rate": 2e-4, "max_steps": 3, "hub_token": token, "launch": f"--hub_token {token}"},
        metrics={"train_loss": 1.5},
    )
    push_adapter_to_hub(adapter, "me/janus-lora", training_summary=summary)
    assert hub.state.unexpected == []
    assert [c.summary for c in hub.state.commits] == ["Upload adapter"]

    adapter.save_pretrained(tmp_path / "saved")
    uploaded = hub.state.repos["me/janus-lora"]
    assert sorted(uploaded) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert_same_upload_as_saved(uploaded, local_files(tmp_path / "saved"))

    card = card_of(uploaded)
    assert card.data.base_model == BASE_ID
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.tags == ["janus-pro", "lora", "peft", "image-text-to-text", "text-to-image"]
    assert card.data.datasets == ["HuggingFaceM4/ChartQA"]
    assert 'PeftModel.from_pretrained(base, "me/janus-lora")' in card.text
    assert f'JanusProForConditionalGeneration.from_pretrained("{BASE_ID}")' in card.text
    assert "LoRA SFT with `training/sft_trl.py`" in card.text
    assert "| `learning_rate` | 0.0002 |" in card.text and "| `train_loss` | 1.5 |" in card.text
    assert "`conversations.jsonl`" in card.text and str(tmp_path) not in card.text
    assert "hub_token" not in card.text and "`launch`" not in card.text
    assert_no_token_anywhere(hub, token, logs, capsys)


def test_adapter_through_peft_push_to_hub_loses_the_card(hub, adapter, token):
    """Why `push_adapter_to_hub` exists: PEFT's own `push_to_hub` (transformers' `PushToHubMixin`) uploads
    transformers' generic template, `library_name: transformers` and no base model."""
    adapter.push_to_hub("me/peft-way", token=token)
    card = card_of(hub.state.repos["me/peft-way"])
    assert card.data.base_model is None and "transformers-janus" not in card.text


def test_write_model_card_replaces_trl_card(adapter, tmp_path):
    """What a TRL script calls after `trainer.save_model()`: our card over TRL's (`base_model: None`)."""
    from transformers import TrainingArguments
    from types import SimpleNamespace

    adapter.save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text("---\nbase_model: None\npipeline_tag: text-generation\n---\n# TRL's card\n")
    trainer = SimpleNamespace(
        args=TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, max_steps=2, report_to="none"),
        state=SimpleNamespace(global_step=2, log_history=[{"loss": 2.5, "step": 1}, {"loss": 2.25, "step": 2}]),
        model=adapter,
    )
    summary = TrainingSummary.from_trainer(trainer, method="TRL SFT", datasets=["HuggingFaceM4/ChartQA"])
    assert summary.arguments["learning_rate"] == 1e-4 and summary.arguments["max_steps"] == 2
    assert summary.arguments["lora_r"] == 2 and summary.arguments["lora_target_modules"] == r".*language_model.*\.(q_proj|v_proj)"
    assert summary.metrics == {"global_step": 2, "loss": 2.25}
    path = write_model_card(tmp_path, adapter, training_summary=summary)
    card = ModelCard.load(path)
    assert card.data.base_model == BASE_ID and card.data.pipeline_tag == "image-text-to-text"
    assert "TRL's card" not in card.text and "| `loss` | 2.25 |" in card.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".README")) == []  # no temporary left


# ------------------------------------------------------------------------------------------------------------------
# The pipeline


def test_pipeline_push_uploads_the_saved_pipeline_with_our_card(hub, hub_model, processor, token, logs, capsys, tmp_path):
    pipe = JanusProImagePipeline(model=hub_model, processor=processor)
    pipe.push_to_hub("me/janus-pipe", token=token)
    assert hub.state.unexpected == []
    assert [c.summary for c in hub.state.commits] == ["Upload pipeline"]

    pipe.save_pretrained(tmp_path)
    uploaded = hub.state.repos["me/janus-pipe"]
    assert_same_upload_as_saved(uploaded, local_files(tmp_path))
    assert {"model_index.json", "pipeline.py", "model/model.safetensors", "model/README.md", "processor/processor_config.json"} <= set(uploaded)

    card = card_of(uploaded)
    assert card.data.base_model == BASE_ID
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-image"
    assert card.data.tags == ["janus-pro", "custom_code", "text-to-image"]
    assert 'JanusProImagePipeline.from_pretrained("me/janus-pipe")' in card.text
    assert 'DiffusionPipeline.from_pretrained("me/janus-pipe", trust_remote_code=True)' in card.text
    assert "<!-- transformers-janus card: model -->" in uploaded["model/README.md"].decode()
    assert_no_token_anywhere(hub, token, logs, capsys)


# ------------------------------------------------------------------------------------------------------------------
# docs/finetuning.md, "Sharing on the Hub"

DOC = Path(__file__).parent.parent / "docs" / "finetuning.md"


def hub_section() -> str:
    text = DOC.read_text()
    start = text.index("## Sharing on the Hub")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_sharing_doc_blocks_push_what_they_say(hub, token, checkpoint_dir, monkeypatch, logs, capsys):
    """The section's Python blocks (```py, run here with the stub rather than by the offline doc runner), in order,
    with the real model id swapped for the fixture checkpoint and the token in `HF_TOKEN` as `hf auth login` leaves
    it."""
    monkeypatch.setenv("HF_TOKEN", token)
    namespace = {}
    for block in re.findall(r"```py\n(.*?)```", hub_section(), re.DOTALL):
        exec(compile(block.replace('"deepseek-ai/Janus-Pro-1B"', repr(str(checkpoint_dir))), "finetuning.md", "exec"), namespace)
    assert hub.state.unexpected == []
    assert [(c.repo_id, c.summary) for c in hub.state.commits] == [
        ("your-name/janus-pro-1b-charts", "Upload model"),
        ("your-name/janus-pro-1b-charts", "Upload processor"),
        ("your-name/janus-pro-1b-pipeline", "Upload pipeline"),
        ("your-name/janus-pro-1b-charts-lora", "Upload adapter"),
    ]
    repos = hub.state.repos
    assert "<!-- transformers-janus card: model -->" in repos["your-name/janus-pro-1b-charts"]["README.md"].decode()
    assert {"model.safetensors", "tokenizer.json", "processor_config.json"} <= set(repos["your-name/janus-pro-1b-charts"])
    assert "model_index.json" in repos["your-name/janus-pro-1b-pipeline"]
    adapter_card = card_of(repos["your-name/janus-pro-1b-charts-lora"])
    assert adapter_card.data.datasets == ["HuggingFaceM4/ChartQA"] and "| `lora_r` | 16 |" in adapter_card.text
    assert sorted(repos["your-name/janus-pro-1b-charts-lora"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert_no_token_anywhere(hub, token, logs, capsys)


def test_sharing_doc_hf_upload_sends_the_training_folder_without_checkpoints(hub, hub_model, processor, token, tmp_path):
    """The doc's `hf upload` command, run as it is (a new process reads `HF_ENDPOINT`/`HF_TOKEN` at import), on a
    folder laid out as `training/train.py` leaves it."""
    command = re.search(r"```bash\n(hf upload .*?)```", hub_section(), re.DOTALL).group(1)
    run_dir = tmp_path / "runs" / "janus-pro-1b-sft"
    hub_model.save_pretrained(run_dir, training_summary=TrainingSummary("Janus-Pro stage 3", metrics={"text_loss": 2.0}))
    processor.save_pretrained(run_dir)
    (run_dir / "train_results.json").write_text(json.dumps({"step": 2, "text_loss": 2.0}))
    expected = local_files(run_dir)
    for extra in ("checkpoint-2/model.safetensors", "checkpoint-2/manifest.json", "vq_codes/0.pt", "samples/rank-0.jsonl", "train_log.jsonl"):
        (run_dir / extra).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / extra).write_text("not for the Hub")
    environment = {
        **os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.state.unexpected == []
    assert hub.state.repos["your-name/janus-pro-1b-sft"] == expected
    assert token not in result.stdout and token not in result.stderr
