"""
Model cards for what this package saves and pushes (a model, a processor, a PEFT adapter, a `JanusProImagePipeline`),
built with `huggingface_hub`'s `ModelCard` / `ModelCardData`, and the upload that keeps them.

transformers' and diffusers' `push_to_hub` write their generic template into README.md after `save_pretrained` has
written ours, and TRL's `create_model_card` writes `base_model: None` with a text-generation quick start; the
`push_to_hub` overrides of this package and `push_adapter_to_hub` upload through `push_folder_with_card` instead, and
`write_model_card` is what a training script calls in place of TRL's card.

Metadata choices (the Hub reads them):

- `library_name: transformers` for models, processors and adapters' bases alike: the saved code loads with plain
  transformers (`trust_remote_code=True`, tag `custom_code`), so the Hub's transformers snippet and download counting
  apply; `transformers-janus` is no library the Hub knows. Adapters say `peft` (PEFT's convention: the Hub then links
  them to `base_model` as adapters), pipelines `diffusers` (their root is a `model_index.json`).
- `pipeline_tag: image-text-to-text` for models, processors and adapters: transformers' `pipeline(model=repo_id)`
  infers its task from this tag, and the `image-text-to-text` task loads through `AutoModelForImageTextToText`, which
  the checkpoint registers; `any-to-any` loads through `AutoModelForMultimodalLM`, which it does not. The generation
  half is the `text-to-image` tag. Pipelines: `text-to-image`, the one thing they do.
- `base_model` only when it is a Hub id: the Hub refuses a commit whose card names a local path (transformers#33922).
  A local source that was saved by this package passes on the Hub id its own card names, so a model trained from
  `deepseek-ai/Janus-Pro-1B`, saved, reloaded and converted still names it.

This module imports nothing of the package (it is copied with `packaging.py` into saved directories).
"""

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging


logger = logging.get_logger(__name__)

CARD_KINDS = ("model", "processor", "adapter", "pipeline")
# Marks a card this module wrote (invisible on the Hub): a later push may replace such a card, never someone's own.
CARD_MARKER = "<!-- transformers-janus card: {kind} -->"
CARD_MARKER_PATTERN = re.compile(r"<!-- transformers-janus card: (\w+) -->")
# Training arguments never written into a card: credentials, whatever they are called.
SECRET_ARGUMENT = re.compile(r"(^|_)(token|secret|password|api_key)$", re.IGNORECASE)
# The training arguments `TrainingSummary.from_trainer` records (a `TrainingArguments` holds ~150 fields).
TRAINER_ARGUMENTS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "weight_decay",
    "seed",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "max_length",
    "packing",
    "assistant_only_loss",
    "completion_only_loss",
)

# A PEFT adapter's settings, by the name the card records them under.
LORA_ARGUMENTS = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout", "target_modules": "lora_target_modules"}

LIBRARY_NAMES = {"model": "transformers", "processor": "transformers", "adapter": "peft", "pipeline": "diffusers"}
PIPELINE_TAGS = {
    "model": "image-text-to-text",
    "processor": "image-text-to-text",
    "adapter": "image-text-to-text",
    "pipeline": "text-to-image",
}
KIND_TAGS = {
    "model": ["janus-pro", "custom_code", "image-text-to-text", "text-to-image"],
    "processor": ["janus-pro", "custom_code", "image-text-to-text", "text-to-image"],
    "adapter": ["janus-pro", "lora", "peft", "image-text-to-text", "text-to-image"],
    "pipeline": ["janus-pro", "custom_code", "text-to-image"],
}

# Where a saved folder's snippets point when no Hub id is known yet.
LOCAL_PLACEHOLDER = "path/to/this/folder"


@dataclass
class TrainingSummary:
    """
    What a training run tells its card: how it trained, on what, with which arguments, and where it ended.

    Args:
        method (`str`): One line, e.g. "Janus-Pro stage III (SFT) with `training/train.py`".
        datasets (`list[str]`): Hub dataset ids (named in the card's metadata) or local files (listed by file name).
        arguments (`dict`): Training arguments worth reading (learning rate, steps, batch size, ...).
        metrics (`dict`): Final values, e.g. `{"text_loss": 1.93, "image_loss": 5.1}`.
    """

    method: str
    datasets: list[str] = field(default_factory=list)
    arguments: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @classmethod
    def from_trainer(cls, trainer, method: str, datasets: Iterable[str] = ()) -> "TrainingSummary":
        """The summary of a transformers/TRL `Trainer` run: the usual arguments (`TRAINER_ARGUMENTS`), the PEFT
        adapter's rank, alpha and targets when the model is one, and the last logged loss and step."""
        args = trainer.args
        arguments = {name: getattr(args, name) for name in TRAINER_ARGUMENTS if getattr(args, name, None) is not None}
        peft_config = getattr(trainer.model, "peft_config", None)
        if isinstance(peft_config, dict) and peft_config:
            adapter = next(iter(peft_config.values()))
            for name, recorded_as in LORA_ARGUMENTS.items():
                value = getattr(adapter, name, None)
                if value is not None:
                    arguments[recorded_as] = sorted(value) if isinstance(value, set) else value
        metrics = {"global_step": trainer.state.global_step}
        for record in reversed(trainer.state.log_history):
            for name in ("train_loss", "loss"):
                if name in record and name not in metrics:
                    metrics[name] = record[name]
        return cls(method=method, datasets=list(datasets), arguments=arguments, metrics=metrics)


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """True for a string the Hub takes as a repo id (`user/name` or `name`) that is no existing local path."""
    if not isinstance(name, str) or not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


# Data files a training run names: local even when the path would also pass as a repo id (`data/train.jsonl`).
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".tar", ".zip")


def is_hub_dataset_id(name: str | os.PathLike | None) -> bool:
    """True for a Hub dataset id: a repo id that names no local path and no data file."""
    return is_hub_id(name) and not str(name).lower().endswith(DATA_FILE_SUFFIXES)


def _local_name(path: str | os.PathLike) -> str:
    """What a card shows of a local path: its last component (a card is public; the rest of the path is private)."""
    return os.path.basename(str(path).rstrip("/\\")) or str(path)


def read_card_metadata(directory: str | os.PathLike) -> dict:
    """The YAML metadata of `directory/README.md` ({} when it has none)."""
    path = Path(directory) / "README.md"
    if not path.is_file():
        return {}
    try:
        return ModelCard.load(path).data.to_dict()
    except (ValueError, OSError):  # not a card (e.g. plain text): no metadata
        return {}


def resolve_base_model(name_or_path: str | os.PathLike | None) -> str | None:
    """
    The Hub id a model loaded from `name_or_path` derives from: `name_or_path` itself when it is a Hub id; for a local
    folder, the `base_model` its card names (what this package wrote when it saved it); None otherwise.
    """
    if name_or_path is None or str(name_or_path) in ("", "None"):
        return None
    if is_hub_id(str(name_or_path)):
        return str(name_or_path)
    if os.path.isdir(name_or_path):
        base_model = read_card_metadata(name_or_path).get("base_model")
        if isinstance(base_model, list):
            base_model = base_model[0] if len(base_model) == 1 else None
        return base_model if is_hub_id(base_model) else None
    return None


def card_kind(obj) -> str:
    """Which card `obj` gets: "adapter" for a PEFT model (or a model carrying adapters), "pipeline", "processor" or
    "model"."""
    if (hasattr(obj, "get_base_model") and hasattr(obj, "peft_config")) or getattr(obj, "_hf_peft_config_loaded", False):
        return "adapter"
    if hasattr(obj, "components") and hasattr(obj, "register_modules"):
        return "pipeline"
    if hasattr(obj, "tokenizer") and not hasattr(obj, "config"):
        return "processor"
    return "model"


def source_of(obj) -> str | None:
    """Where `obj`'s weights (or tokenizer files) were loaded from, as `from_pretrained` recorded it."""
    kind = card_kind(obj)
    if kind == "pipeline":
        return source_of(obj.model)
    if kind == "processor":
        return getattr(obj.tokenizer, "name_or_path", None) or None
    if kind == "adapter" and hasattr(obj, "get_base_model"):
        obj = obj.get_base_model()
    config = getattr(obj, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(obj, "name_or_path", None)
    return str(name) if name else None


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _loading_section(kind: str, repo: str, base_model: str | None) -> str:
    """How to load what the card describes, with this package and without it."""
    if kind == "pipeline":
        return f"""## Loading

With the package (`pip install transformers-janus`):

```python
from transformers_janus import JanusProImagePipeline

pipe = JanusProImagePipeline.from_pretrained("{repo}")
images = pipe("a red apple on a table").images
```

Without it, the pipeline's code stored beside it is used (`model_index.json` names it):

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)
```

The code needs only `transformers`, `diffusers` and `torch` (plus `safetensors`, `pillow` and `numpy`, which they
bring).
"""
    if kind == "adapter":
        base = base_model or "path/to/the/base/model"
        return f"""## Loading

A PEFT adapter of [`{base}`]: load the base, then the adapter. With the package (`pip install transformers-janus`),
the base may be in DeepSeek's format or this package's:

```python
from peft import PeftModel
from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor

base = JanusProForConditionalGeneration.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{repo}")
processor = JanusProProcessor.from_pretrained("{base}")
```

`model.merge_and_unload()` folds the adapter into the weights; `JanusProImagePipeline.load_lora_weights("{repo}")`
takes it for image generation.

Without the package, the base must be a checkpoint saved by it (which carries its code), loaded with
`trust_remote_code=True`; DeepSeek's own checkpoints need the package:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText

base = AutoModelForImageTextToText.from_pretrained("path/to/a/saved/janus-pro", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{repo}")
```
"""
    if kind == "processor":
        return f"""## Loading

With the package (`pip install transformers-janus`):

```python
import transformers_janus
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained("{repo}")
```

Without it, the processor's code stored beside it is used (`auto_map` in `processor_config.json`):

```python
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
```

The code needs only `transformers`, `diffusers` and `torch` (plus `safetensors`, `pillow` and `numpy`, which they
bring).
"""
    return f"""## Loading

With the package (`pip install transformers-janus`):

```python
import transformers_janus
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}")
processor = AutoProcessor.from_pretrained("{repo}")
```

Without it, the model's code stored beside it is used (`auto_map` in `config.json` / `processor_config.json`):

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}", trust_remote_code=True)  # AutoModel works too
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
```

The code needs only `transformers`, `diffusers` and `torch` (plus `safetensors`, `pillow` and `numpy`, which they
bring). `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText`, `AutoProcessor`, `AutoImageProcessor` and
`AutoTokenizer` all resolve, and the answers are the same as with the package installed.
"""


def _training_section(training: TrainingSummary) -> str:
    lines = ["## Training", "", training.method, ""]
    if training.datasets:
        names = [
            f"[{name}](https://huggingface.co/datasets/{name})" if is_hub_dataset_id(name) else f"`{_local_name(name)}`"
            for name in training.datasets
        ]
        lines += ["Data: " + ", ".join(names), ""]
    token = get_token()  # the token in use never enters a card, whatever an argument holding it is called
    arguments = {
        name: value
        for name, value in training.arguments.items()
        if not SECRET_ARGUMENT.search(name) and not (token and token in str(value))
    }
    if arguments:
        lines += ["| argument | value |", "|---|---|"]
        lines += [f"| `{name}` | {_format_value(value)} |" for name, value in arguments.items()]
        lines.append("")
    if training.metrics:
        lines += ["| metric | final value |", "|---|---|"]
        lines += [f"| `{name}` | {_format_value(value)} |" for name, value in training.metrics.items()]
        lines.append("")
    return "\n".join(lines)


def build_model_card(
    kind: str,
    *,
    base_model: str | None = None,
    source: str | None = None,
    repo_id: str | None = None,
    training_summary: TrainingSummary | dict | None = None,
    tags: Iterable[str] | None = None,
    pipeline_tag: str | None = None,
) -> ModelCard:
    """
    The card of a `kind` ("model", "processor", "adapter", "pipeline") artifact: metadata (`base_model` if a Hub id,
    `library_name`, `pipeline_tag`, tags, Hub dataset ids) and a body saying what it is, where it comes from, how to
    load it with and without this package (snippets name `repo_id`, or a placeholder path when saved locally), and
    its training when `training_summary` is given.
    """
    if kind not in CARD_KINDS:
        raise ValueError(f"`kind` must be one of {CARD_KINDS}, got {kind!r}.")
    if isinstance(training_summary, dict):
        training_summary = TrainingSummary(**training_summary)
    if base_model is not None and not is_hub_id(base_model):
        raise ValueError(
            f"`base_model` must be a Hub model id (the Hub refuses a card naming a local path), got {base_model!r}; "
            "pass the id the weights came from, or None."
        )
    all_tags = list(KIND_TAGS[kind])
    for tag in tags or ():
        if tag not in all_tags:
            all_tags.append(tag)
    hub_datasets = [name for name in (training_summary.datasets if training_summary else []) if is_hub_dataset_id(name)]
    data = ModelCardData(
        base_model=base_model,
        library_name=LIBRARY_NAMES[kind],
        pipeline_tag=pipeline_tag or PIPELINE_TAGS[kind],
        tags=all_tags,
        datasets=hub_datasets or None,
    )
    title = repo_id.rsplit("/", 1)[-1] if repo_id else "Janus-Pro"
    what = {
        "model": "A Janus-Pro model (DeepSeek's unified multimodal understanding and generation model)",
        "processor": "The processor (chat format, tokenizer, image preprocessing) of a Janus-Pro model",
        "adapter": "A PEFT LoRA adapter for a Janus-Pro model",
        "pipeline": "A Janus-Pro text-to-image pipeline (`JanusProImagePipeline`, a diffusers `DiffusionPipeline`)",
    }[kind]
    does = (
        "" if kind == "pipeline" else
        " It answers about images (image-text-to-text) and draws images from text (text-to-image)."
    )
    lines = [CARD_MARKER.format(kind=kind), "", f"# {title}", ""]
    lines += [f"{what} saved by the `transformers-janus` package (`model_type: janus_pro`).{does}", ""]
    if base_model is not None:
        lines += [f"Base model: [{base_model}](https://huggingface.co/{base_model}).", ""]
    elif source:
        lines += [f"Base model: a local checkpoint (`{_local_name(source)}`).", ""]
    body = "\n".join(lines) + "\n" + _loading_section(kind, repo_id or LOCAL_PLACEHOLDER, base_model)
    if training_summary is not None:
        body += "\n" + _training_section(training_summary)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def model_card_for(
    obj,
    *,
    repo_id: str | None = None,
    training_summary: TrainingSummary | dict | None = None,
    tags: Iterable[str] | None = None,
    pipeline_tag: str | None = None,
    base_model: str | None = None,
) -> ModelCard:
    """The card of a model, processor, PEFT model or pipeline of this package; `base_model` defaults to the Hub id its
    weights came from (`resolve_base_model` of where `from_pretrained` loaded them)."""
    source = source_of(obj)
    return build_model_card(
        card_kind(obj),
        base_model=base_model if base_model is not None else resolve_base_model(source),
        source=source,
        repo_id=repo_id,
        training_summary=training_summary,
        tags=tags,
        pipeline_tag=pipeline_tag,
    )


def _write_text_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_model_card(
    output_dir: str | os.PathLike,
    obj=None,
    *,
    kind: str | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    training_summary: TrainingSummary | dict | None = None,
    tags: Iterable[str] | None = None,
    pipeline_tag: str | None = None,
) -> Path:
    """
    Write (atomically, replacing what is there) `output_dir/README.md`: the card of `obj` (model, processor, PEFT model
    or pipeline; its base model and kind are read from it) or, without `obj`, of a `kind` artifact from `base_model`.
    For training scripts: call it after the trainer saved, in place of TRL's `create_model_card` (which writes
    `base_model: None` and a text-generation quick start). Returns the card's path.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ValueError(f"`output_dir` {str(output_dir)!r} is not a folder; save the model into it first.")
    if obj is not None:
        card = model_card_for(
            obj, repo_id=repo_id, training_summary=training_summary, tags=tags, pipeline_tag=pipeline_tag, base_model=base_model
        )
    else:
        card = build_model_card(
            kind or "model", base_model=base_model, repo_id=repo_id, training_summary=training_summary, tags=tags, pipeline_tag=pipeline_tag
        )
    path = output_dir / "README.md"
    _write_text_atomically(path, str(card))
    return path


# ------------------------------------------------------------------------------------------------------------------
# Upload


def hub_api() -> HfApi:
    """An `HfApi` for the endpoint configured now (a new one per push: `HF_ENDPOINT` is read when it is built)."""
    return HfApi(library_name="transformers-janus")


def _remote_card(api: HfApi, repo_id: str, revision: str | None, token) -> ModelCard | None:
    """The README.md the repository holds at `revision`, or None if it holds none."""
    with tempfile.TemporaryDirectory() as download_dir:
        try:
            path = api.hf_hub_download(repo_id, "README.md", revision=revision, token=token, local_dir=download_dir)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            return None
        return ModelCard.load(path)


def card_to_upload(ours: ModelCard, remote: ModelCard | None) -> ModelCard:
    """
    Which card a push uploads: ours for a new repository or over a card of ours, except that a processor's card never
    replaces a model's (`model.push_to_hub(repo); processor.push_to_hub(repo)` keeps the model's); a card someone wrote
    is kept, with our tags added and `base_model`, `library_name`, `pipeline_tag` filled where it has none (as
    transformers' and diffusers' `push_to_hub` keep a remote card).
    """
    if remote is None:
        return ours
    found = CARD_MARKER_PATTERN.search(remote.text)
    if found is not None:
        our_kind = CARD_MARKER_PATTERN.search(ours.text).group(1)
        return remote if our_kind == "processor" and found.group(1) != "processor" else ours
    for name in ("base_model", "library_name", "pipeline_tag"):
        if remote.data.get(name) is None and ours.data.get(name) is not None:
            remote.data[name] = ours.data.get(name)
    remote.data.tags = list(remote.data.tags or [])
    remote.data.tags += [tag for tag in ours.data.tags or [] if tag not in remote.data.tags]
    return remote


def push_folder_with_card(
    repo_id: str,
    save: Callable[[str], None],
    make_card: Callable[[str], ModelCard],
    *,
    commit_message: str,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
):
    """
    Create `repo_id` if needed, `save` into a temporary folder, write into its README.md the card `card_to_upload`
    picks (ours: `make_card(full repo id)`), and upload the folder in one commit. Returns huggingface_hub's
    `CommitInfo`.
    """
    api = hub_api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    card = card_to_upload(make_card(repo_id), _remote_card(api, repo_id, revision, token))
    with tempfile.TemporaryDirectory() as work_dir:
        save(work_dir)
        _write_text_atomically(Path(work_dir) / "README.md", str(card))
        logger.info(f"Uploading to {repo_id}: {sorted(os.listdir(work_dir))}")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=work_dir,
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


def push_adapter_to_hub(
    peft_model,
    repo_id: str,
    *,
    training_summary: TrainingSummary | dict | None = None,
    tags: Iterable[str] | None = None,
    pipeline_tag: str | None = None,
    commit_message: str = "Upload adapter",
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
):
    """
    `peft_model.push_to_hub(repo_id)` with our card: PEFT's `push_to_hub` is transformers' (`PushToHubMixin`), which
    writes transformers' generic card over PEFT's own. Uploads `adapter_config.json`, the adapter's weights and
    README.md (`base_model`: the base's Hub id, tags `lora`, `peft`, `janus-pro`).
    """
    if card_kind(peft_model) != "adapter":
        raise ValueError(
            f"`push_adapter_to_hub` uploads a PEFT model (`peft.get_peft_model`), got a {type(peft_model).__name__}; "
            "push a full model with its own `push_to_hub`."
        )
    return push_folder_with_card(
        repo_id,
        lambda directory: peft_model.save_pretrained(directory),
        lambda full_id: model_card_for(
            peft_model, repo_id=full_id, training_summary=training_summary, tags=tags, pipeline_tag=pipeline_tag
        ),
        commit_message=commit_message,
        commit_description=commit_description,
        private=private,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )


__all__ = [
    "TrainingSummary",
    "build_model_card",
    "card_kind",
    "card_to_upload",
    "is_hub_id",
    "model_card_for",
    "push_adapter_to_hub",
    "push_folder_with_card",
    "resolve_base_model",
    "write_model_card",
]
