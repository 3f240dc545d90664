"""
Training checkpoints that resume exactly and are never loaded half-written.

`OUTPUT_DIR/checkpoint-STEP/` holds what `Accelerator.save_state` writes (model weights, optimizer, scheduler and,
per process, every RNG: Python, NumPy, torch CPU and CUDA; under FSDP or DeepSpeed the sharded states those
backends write), plus `training_state.json` (the step, which is also the data position because the data of a step
is a function of the seed and the step, and what the run's data depends on) and `manifest.json` (size and SHA-256 of
every file). Accelerate's format is used rather than a new one so that sharded FSDP/DeepSpeed states are saved by the
code that knows them.

The folder is written under a temporary sibling name, every file is fsynced, the manifest is written last and the
folder is renamed into place, so a run killed mid-save leaves no `checkpoint-STEP`. A folder that lacks its manifest,
lacks a file or holds a file whose size or checksum differs is refused with a `ValueError` naming the file.
"""

import json
import os
import re
import shutil
from pathlib import Path

from transformers.utils import logging

from ..utils import sha256_file


logger = logging.get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_NAME = "training_state.json"
MANIFEST_NAME = "manifest.json"
_CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def _fsync(path: Path):
    """Flush a file's or folder's contents to disk (a folder: its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, content: dict):
    with open(path, "w") as file:
        json.dump(content, file, indent=2, sort_keys=True)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of `step` lives: `output_dir/checkpoint-STEP`."""
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, training_state: dict) -> Path:
    """
    Save the accelerator's prepared model, optimizer and scheduler, every process's RNG states and `training_state`
    (JSON-serialisable; `step` is added) as `output_dir/checkpoint-STEP`, atomically. Every process must call it
    (sharded states are written by every rank); `output_dir` must be shared by all processes. Returns the folder.
    """
    destination = checkpoint_dir(output_dir, step)
    staging = destination.parent / f".{destination.name}.saving"
    if accelerator.is_main_process:
        # A folder left by a run killed while saving.
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(staging / TRAINING_STATE_NAME, {**training_state, "step": step})
        files = {}
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                _fsync(path)
                files[path.relative_to(staging).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        _write_json(staging / MANIFEST_NAME, {"format": 1, "step": step, "files": files})
        for folder in sorted({path.parent for path in staging.rglob("*")}, key=lambda p: len(p.parts), reverse=True):
            _fsync(folder)
        if destination.exists():
            # A run resumed from an earlier checkpoint redoes this step: the new folder replaces the old as a whole.
            logger.warning(f"Replacing {destination}, written by an earlier run in this output_dir.")
            replaced = destination.parent / f".{destination.name}.replaced"
            shutil.rmtree(replaced, ignore_errors=True)
            os.rename(destination, replaced)
            os.rename(staging, destination)
            shutil.rmtree(replaced)
        else:
            os.rename(staging, destination)
        _fsync(destination.parent)
        logger.info(f"Saved checkpoint {destination}")
    accelerator.wait_for_everyone()
    return destination


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """
    Check a checkpoint folder against its manifest; returns its training state. Raises `ValueError` naming the
    missing, truncated or altered file (a copy interrupted midway, a disk error, a hand edit).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"Checkpoint {path} does not exist or is not a folder.")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValueError(
            f"Checkpoint {path} has no {MANIFEST_NAME}: it is incomplete (a save or copy that did not finish) and is "
            "not loaded. Resume from an earlier checkpoint."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"Checkpoint {path}: {manifest_path} is damaged ({error}).") from None
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"Checkpoint {path} is incomplete: {file} is missing.")
        size = file.stat().st_size
        if size != expected["size"]:
            raise ValueError(
                f"Checkpoint {path} is damaged: {file} has {size} bytes, its manifest records {expected['size']} "
                "(truncated or replaced)."
            )
        if sha256_file(file) != expected["sha256"]:
            raise ValueError(f"Checkpoint {path} is damaged: {file} does not match its checksum in {MANIFEST_NAME}.")
    if TRAINING_STATE_NAME not in files:
        raise ValueError(f"Checkpoint {path} is incomplete: its manifest lists no {TRAINING_STATE_NAME}.")
    return json.loads((path / TRAINING_STATE_NAME).read_text())


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The `checkpoint-STEP` folders in `output_dir` as (step, path), by step (temporary folders excluded)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT_PATTERN.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """
    The highest-step checkpoint in `output_dir` that has its manifest (others are skipped with a warning), or None.
    Its files are checked when it is loaded; a damaged one is an error there, not a silent fall-back.
    """
    for step, path in reversed(list_checkpoints(output_dir)):
        if (path / MANIFEST_NAME).is_file():
            return path
        logger.warning(f"Skipping {path}: it has no {MANIFEST_NAME} (an incomplete save).")
    return None


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    """`--resume_from_checkpoint`: None, a checkpoint folder, or `latest` (the highest complete one in `output_dir`)."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None:
            logger.warning(f"`--resume_from_checkpoint latest`: no checkpoint in {output_dir}; starting from step 0.")
        return latest
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise ValueError(
            f"`--resume_from_checkpoint` {resume_from_checkpoint!r} is not a folder; pass a `checkpoint-STEP` folder "
            "or `latest`."
        )
    return path


def load_checkpoint(accelerator, path: str | os.PathLike) -> dict:
    """
    Verify `path` against its manifest (on the main process; every process gets its verdict), then restore the
    accelerator's prepared objects and RNG states from it. Returns the training state saved with it (with `step`).
    """
    from accelerate.utils import broadcast_object_list

    verdict = [None]
    if accelerator.is_main_process:
        try:
            verify_checkpoint(path)
        except ValueError as error:
            verdict = [str(error)]
    if accelerator.num_processes > 1:
        broadcast_object_list(verdict)
    if verdict[0] is not None:
        raise ValueError(verdict[0])
    training_state = json.loads((Path(path) / TRAINING_STATE_NAME).read_text())
    accelerator.load_state(str(path))
    return training_state


def save_final_model(accelerator, model, processor, output_dir: str | os.PathLike, training_summary=None):
    """
    Save the trained model (gathered from every process under FSDP/DeepSpeed) and the processor with
    `save_pretrained` into `output_dir`, beside its checkpoints (for a PEFT model: the adapter). The files are written
    into a temporary sibling folder and moved in with `config.json` (`adapter_config.json`) last, so a folder whose
    config is present holds the complete weights. `training_summary` (a `model_card.TrainingSummary`: stage, data,
    arguments, final losses) goes into the model card (README.md), whose `base_model` names the Hub id the weights
    were loaded from.
    """
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP and DeepSpeed: every process calls it
    if accelerator.is_main_process:
        output_dir = Path(output_dir)
        staging = output_dir / ".final.saving"
        shutil.rmtree(staging, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        is_adapter = hasattr(unwrapped, "get_base_model") and hasattr(unwrapped, "peft_config")
        card_kwargs = {"training_summary": training_summary} if training_summary is not None and not is_adapter else {}
        unwrapped.save_pretrained(staging, state_dict=state_dict, safe_serialization=True, **card_kwargs)
        if is_adapter:  # PEFT writes its generic card (text-generation, no training); ours replaces it
            from ..model_card import write_model_card

            write_model_card(staging, unwrapped, training_summary=training_summary)
        processor.save_pretrained(staging)
        files = sorted(path for path in staging.rglob("*") if path.is_file())
        for path in files:
            _fsync(path)
        for path in sorted(files, key=lambda path: path.name in ("config.json", "adapter_config.json")):
            target = output_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        _fsync(output_dir)
        shutil.rmtree(staging, ignore_errors=True)
        logger.info(f"Saved the model and processor in {output_dir}")
    accelerator.wait_for_everyone()
