"""
Training samples for Janus-Pro: loading the three data kinds, encoding one record into the training batch contract,
the on-disk cache of VQ codes for generation images, and the up-front check for bad samples.

Public API (names are stable; `training/train.py` builds on them):

- `DATA_KINDS = ("understanding", "text", "generation")`.
- `load_samples(source, kind, split="train") -> datasets.Dataset`: a JSONL file, another data file or a directory
  `datasets.load_dataset` reads, or a Hub dataset id. Every record gets `kind`, a stable `record_id`
  (`"name.jsonl:LINE"` for JSONL, `"name[INDEX]"` otherwise) and `load_problem` (why the record cannot be used as it
  is, `""` when it can); image paths are resolved relative to the data file's folder. Columns per kind:
  understanding `messages`, `images`; text `messages`; generation `caption`, `image`. Message contents are
  normalised to typed parts (`[{"type": "text", "text": ...}, {"type": "image", "text": None}]`), which the chat
  template renders exactly as the original string or parts.
- `JanusProSampleEncoder(processor, max_length, vq_codes=None, cfg_drop_prob=0.1)`; `encode(record,
  generator=None) -> dict` of 1-D tensors `input_ids`, `labels`, `image_token_ids`, `image_labels` (plus
  `pixel_values` `[num_images, 3, H, W]` for understanding) and `kind`, `record_id`; `sample_length(record)`;
  `problems(record) -> list[str]`.
- `sample_generator(seed, *indices) -> torch.Generator`: the generator for one sample's random choices (the CFG
  caption drop), derived from e.g. `(seed, step, position)` so a run is deterministic and resumes from the step.
- `VQCodeCache(model, image_processor, cache_dir, size=None)`: `get(path)`, `get_many(paths)`, `precompute(paths)`.
- `BadSample(kind, record_id, reason)`, `BadSampleError`, `find_bad_samples(dataset, encoder)`,
  `check_samples(datasets_by_kind, encoder, on_bad_sample="fail"|"skip")`.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import PIL.Image
import torch
from safetensors.torch import load_file, save_file
from transformers.utils import logging

from ..utils import sha256_file


logger = logging.get_logger(__name__)

DATA_KINDS = ("understanding", "text", "generation")
IGNORE_INDEX = -100

_PARTS = datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")})
_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": _PARTS})
_COMMON = {
    "kind": datasets.Value("string"),
    "record_id": datasets.Value("string"),
    "load_problem": datasets.Value("string"),
}
FEATURES = {
    "understanding": datasets.Features(
        {**_COMMON, "messages": _MESSAGES, "images": datasets.List(datasets.Value("string"))}
    ),
    "text": datasets.Features({**_COMMON, "messages": _MESSAGES}),
    "generation": datasets.Features(
        {**_COMMON, "caption": datasets.Value("string"), "image": datasets.Value("string")}
    ),
}


def _check_kind(kind: str):
    if kind not in DATA_KINDS:
        raise ValueError(f"`kind` must be one of {DATA_KINDS}, got {kind!r}.")


# Loading


def _normalize_messages(messages) -> tuple[list[dict], str]:
    """Messages as role + typed parts (one Arrow schema for string and list contents), and why they are malformed."""
    if not isinstance(messages, (list, tuple)) or not all(isinstance(message, dict) for message in messages):
        return [], f"`messages` must be a list of {{role, content}} objects, got {type(messages).__name__}"
    normalized = []
    for message in messages:
        content = message.get("content")
        if content is None:
            parts = []
        elif isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, (list, tuple)):
            parts = []
            for part in content:
                part_type = part.get("type") if isinstance(part, dict) else None
                if part_type == "text":
                    parts.append({"type": "text", "text": part.get("text") or ""})
                elif part_type == "image":
                    parts.append({"type": "image", "text": None})
                else:
                    return [], f"message content parts must be text or image items, got {part!r}"
        else:
            return [], f"message `content` must be a string or a list of parts, got {type(content).__name__}"
        normalized.append({"role": str(message.get("role")), "content": parts})
    return normalized, ""


def _resolve_path(path, base_dir: Path | None) -> str | None:
    if path is None:
        return None
    if isinstance(path, dict):  # a `datasets.Image(decode=False)` value
        path = path.get("path")
        if path is None:
            return None
    path = Path(str(path)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def _normalize_record(raw, kind: str, record_id: str, base_dir: Path | None) -> dict:
    record = {"kind": kind, "record_id": record_id, "load_problem": ""}
    if not isinstance(raw, dict):
        raw, record["load_problem"] = {}, f"a record must be a JSON object, got {type(raw).__name__}"
    if kind in ("understanding", "text"):
        record["messages"], problem = _normalize_messages(raw.get("messages", []))
        record["load_problem"] = record["load_problem"] or problem
    if kind == "understanding":
        images = raw.get("images") or []
        if isinstance(images, (str, dict)):
            images = [images]
        record["images"] = [_resolve_path(image, base_dir) for image in images]
        if any(image is None for image in record["images"]):
            record["images"] = [image for image in record["images"] if image is not None]
            record["load_problem"] = record["load_problem"] or "an entry of `images` has no path"
    if kind == "generation":
        caption = raw.get("caption")
        record["caption"] = caption if isinstance(caption, str) else None
        record["image"] = _resolve_path(raw.get("image"), base_dir)
    return record


def _read_jsonl(path: Path, kind: str) -> list[dict]:
    """Records of a JSONL file, ids `"name.jsonl:LINE"`; a line that is not JSON becomes a record with its problem."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record_id = f"{path.name}:{line_number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                record = _normalize_record({}, kind, record_id, path.parent)
                record["load_problem"] = f"the line is not valid JSON ({error})"
            else:
                record = _normalize_record(raw, kind, record_id, path.parent)
            records.append(record)
    return records


_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def load_samples(source: str | os.PathLike, kind: str, split: str = "train") -> datasets.Dataset:
    """
    Load one data kind as a `datasets.Dataset` in the normalised form described in the module docstring. Records are
    not checked here (malformed ones carry their `load_problem`): `check_samples` reports all of them up front.
    """
    _check_kind(kind)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        return datasets.Dataset.from_list(_read_jsonl(path, kind), features=FEATURES[kind])
    if path.is_file():
        if path.suffix not in _BUILDERS:
            raise ValueError(
                f"Cannot read {kind} data from {str(path)!r}: unknown file type {path.suffix!r}; pass a JSONL file "
                f"(one record per line), a {'/'.join(_BUILDERS)} file or a directory `datasets.load_dataset` reads."
            )
        raw = datasets.load_dataset(_BUILDERS[path.suffix], data_files=str(path), split=split)
        base_dir, name = path.parent, path.name
    elif path.is_dir():
        raw, base_dir, name = datasets.load_dataset(str(path), split=split), path, path.name
    else:
        raw, base_dir, name = datasets.load_dataset(str(source), split=split), None, str(source)
    # Image columns (Hub datasets) are read as their file paths, not decoded.
    for column, feature in raw.features.items():
        if isinstance(feature, datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
            raw = raw.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return raw.map(
        lambda example, index: _normalize_record(dict(example), kind, f"{name}[{index}]", base_dir),
        with_indices=True,
        remove_columns=raw.column_names,
        features=FEATURES[kind],
        desc=f"Normalising {kind} records",
    )


# CFG randomness


def sample_generator(seed: int, *indices: int) -> torch.Generator:
    """
    A torch generator for one sample's random choices, seeded by a hash of `(seed, *indices)` (e.g. the step and the
    sample's position in the global batch): the same sample gets the same choice whatever the world size or resume.
    """
    digest = hashlib.sha256(json.dumps([int(seed), *map(int, indices)]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# VQ code cache


class VQCodeCache:
    """
    VQ codes of generation images, computed once with the frozen VQ model and kept on disk as one safetensors file
    per image under `cache_dir/<fingerprint>/`. A file's key hashes the image file's bytes, and the fingerprint hashes
    the VQ model's weights and config and the preprocessing settings, so a changed image, another VQ model or other
    preprocessing never reuses stale codes. Files are written atomically (temporary name, then `os.replace`), so
    processes sharing a cache may race harmlessly.

    Args:
        model: A `JanusProForConditionalGeneration` (or `JanusProModel`): its `vq_model` and `encode_image_tokens`.
        image_processor (`JanusProImageProcessor`): Its `preprocess_for_generation` prepares the images.
        cache_dir (`str` or `os.PathLike`): Where the codes are kept.
        size (`int`, *optional*): Side of the preprocessed images; defaults to the image processor's `image_size`.
    """

    preprocessing_version = 1

    def __init__(self, model, image_processor, cache_dir: str | os.PathLike, size: int | None = None):
        self.model = model
        self.image_processor = image_processor
        self.size = size if size is not None else image_processor.image_size
        self.fingerprint = self._fingerprint()
        self.cache_dir = Path(cache_dir) / self.fingerprint[:16]
        self.num_encoded = 0  # images run through the VQ model by this object

    @property
    def vq_model(self):
        return self.model.vq_model if hasattr(self.model, "vq_model") else self.model.model.vq_model

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        vq_model = self.vq_model
        # Private keys are bookkeeping (diffusers' `_use_default_values` is a set, listed in a per-process order)
        config = {key: value for key, value in dict(vq_model.config).items() if not key.startswith("_")}
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(vq_model.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        settings = {"size": self.size, "method": "preprocess_for_generation", "version": self.preprocessing_version}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        return digest.hexdigest()

    def path_for(self, image_path: str) -> Path:
        return self.cache_dir / f"{sha256_file(image_path)}.safetensors"

    def get(self, image_path: str) -> torch.LongTensor:
        """The image's codes, `[num_image_tokens]` (row-major over the VQ grid)."""
        return self.get_many([image_path])[0]

    @torch.no_grad()
    def get_many(self, image_paths: list[str], batch_size: int = 16) -> list[torch.LongTensor]:
        """Codes of several images: cached ones are read, the others encoded in batches of `batch_size` and written."""
        files = [self.path_for(path) for path in image_paths]
        codes: list[torch.LongTensor | None] = [None] * len(files)
        missing = []
        for index, file in enumerate(files):
            if file.is_file():
                codes[index] = load_file(file)["codes"]
            else:
                missing.append(index)
        vq_model = self.vq_model
        was_training = vq_model.training
        vq_model.eval()  # codes must not depend on the training loop's mode
        try:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                images = [_open_image(image_paths[index]) for index in chunk]
                pixel_values = self.image_processor.preprocess_for_generation(images, size=self.size).pixel_values
                pixel_values = pixel_values.to(vq_model.device)
                encoded = self.model.encode_image_tokens(pixel_values).reshape(len(chunk), -1).cpu().to(torch.long)
                self.num_encoded += len(chunk)
                for index, row in zip(chunk, encoded):
                    codes[index] = row.clone()
                    self._write(files[index], codes[index])
        finally:
            vq_model.train(was_training)
        return codes

    def precompute(self, image_paths: list[str], batch_size: int = 16) -> int:
        """Fill the cache for `image_paths` (e.g. on the main process before training); returns how many it encoded."""
        before = self.num_encoded
        unique = sorted(set(image_paths))
        for start in range(0, len(unique), 1024):
            self.get_many(unique[start : start + 1024], batch_size=batch_size)
        return self.num_encoded - before

    @staticmethod
    def _write(file: Path, codes: torch.LongTensor):
        file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".tmp")
        os.close(handle)
        try:
            save_file({"codes": codes.contiguous()}, temporary)
            os.replace(temporary, file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# Encoding


def _open_image(path: str) -> PIL.Image.Image:
    """A fully decoded image (a truncated or corrupt file fails here, not later in preprocessing)."""
    with PIL.Image.open(path) as image:
        image.load()
        return image.copy()


class BadSampleError(ValueError):
    """A record that cannot be trained on; the message names its kind, record id and reason."""


@dataclass(frozen=True)
class BadSample:
    kind: str
    record_id: str
    reason: str


class JanusProSampleEncoder:
    """
    Encodes one record into the training batch contract (issue 10): 1-D `input_ids`, `labels`, `image_token_ids`,
    `image_labels` (plus `pixel_values` for understanding), `kind` and `record_id`.

    Understanding and text records are rendered with the processor's chat template (its default system prompt unless
    the messages start with a system message); each `<image_placeholder>` is expanded as the processor expands it and
    BOS is prepended. Only the assistant answers and the EOS after each are supervised: the text is tokenized in
    segments cut where each answer starts and ends (the boundaries come from rendering the conversation up to each
    answer, so the prompt before an answer is tokenized exactly as the generation prompt is at inference).

    Generation records are the text-to-image prompt (`processor.build_image_generation_prompt`, empty system prompt,
    ending in `<begin_of_image>`), the image's VQ codes (pad id in `input_ids`, codes in `image_token_ids` and
    `image_labels`) and `<end_of_image>`; no text targets. With probability `cfg_drop_prob` the caption is dropped:
    every prompt token between BOS and `<begin_of_image>` becomes the pad id, the unconditional prompt of
    classifier-free guidance at inference.

    Args:
        processor (`JanusProProcessor`): Tokenizer, chat template, image processor, special token ids.
        max_length (`int`): Longest sample accepted; longer ones are bad samples (never truncated silently).
        vq_codes (`VQCodeCache`, *optional*): Codes of generation images; needed for generation records.
        cfg_drop_prob (`float`, *optional*, defaults to 0.1): Probability of dropping a caption.
    """

    def __init__(self, processor, max_length: int, vq_codes: VQCodeCache | None = None, cfg_drop_prob: float = 0.1):
        if not 0.0 <= cfg_drop_prob <= 1.0:
            raise ValueError(f"`cfg_drop_prob` must be in [0, 1], got {cfg_drop_prob}.")
        if max_length < 1:
            raise ValueError(f"`max_length` must be positive, got {max_length}.")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.vq_codes = vq_codes
        self.cfg_drop_prob = cfg_drop_prob
        self.num_image_tokens = processor.num_image_tokens
        self._image_span = processor.replace_image_token({}, 0)
        self._image_span_ids = {processor.image_token_id, processor.boi_token_id, processor.eoi_token_id}

    # understanding / text

    def _render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.processor.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _chat_segments(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """The rendered conversation cut into (text, is_answer) segments; an answer is ` {content}<eos>`."""
        if not messages:
            raise BadSampleError("`messages` is empty")
        segments, done = [], ""
        for index, message in enumerate(messages):
            if message["role"] not in ("assistant", "<|Assistant|>"):
                continue
            prompt = self._render(messages[:index], add_generation_prompt=True)
            full = self._render(messages[: index + 1])
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise BadSampleError("the chat template does not render the conversation as a growing prefix")
            if len(full) == len(prompt):  # an empty answer renders as the generation prompt: nothing to learn
                continue
            segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
            done = full
        if not any(is_answer for _, is_answer in segments):
            raise BadSampleError("no assistant answer to supervise (no assistant message with content)")
        full = self._render(messages)
        if not full.startswith(done):
            raise BadSampleError("the chat template does not render the conversation as a growing prefix")
        if len(full) > len(done):
            segments.append((full[len(done) :], False))
        return [(text, is_answer) for text, is_answer in segments if text]

    def _encode_chat(self, record: dict) -> tuple[torch.LongTensor, torch.LongTensor, int]:
        """input_ids and labels of a chat record, and how many `<image_placeholder>` it holds."""
        ids, labels = [self.processor.bos_token_id], [IGNORE_INDEX]
        num_placeholders = 0
        for text, is_answer in self._chat_segments(record["messages"]):
            num_placeholders += text.count(self.processor.image_token)
            text = text.replace(self.processor.image_token, self._image_span)
            segment = self.tokenizer(text, add_special_tokens=False).input_ids
            ids += segment
            labels += (
                [IGNORE_INDEX if token in self._image_span_ids else token for token in segment]
                if is_answer
                else [IGNORE_INDEX] * len(segment)
            )
        return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), num_placeholders

    # generation

    def _generation_prompt_ids(self, caption: str, drop_caption: bool) -> torch.LongTensor:
        prompt = self.processor.build_image_generation_prompt(caption)
        ids = torch.tensor(self.tokenizer(prompt).input_ids, dtype=torch.long)
        if drop_caption:
            ids = self.processor.get_unconditional_input_ids(ids)
        return ids

    def _generation_length(self, caption: str) -> int:
        return len(self.tokenizer(self.processor.build_image_generation_prompt(caption)).input_ids) + (
            self.num_image_tokens + 1
        )

    # public

    def sample_length(self, record: dict) -> int:
        """Tokens of the encoded record, without loading its images or VQ codes."""
        if record["kind"] == "generation":
            return self._generation_length(record["caption"])
        return len(self._encode_chat(record)[0])

    def problems(self, record: dict) -> list[str]:
        """Why the record cannot be trained on (empty when it can): checked up front by `find_bad_samples`."""
        kind = record["kind"]
        if record.get("load_problem"):
            return [record["load_problem"]]
        problems = []
        length = None
        if kind in ("understanding", "text"):
            try:
                ids, _, num_placeholders = self._encode_chat(record)
                length = len(ids)
            except BadSampleError as error:
                return [str(error)]
            except Exception as error:  # the chat template refuses a role or part: report it, record by record
                return [f"the chat template cannot render the messages ({type(error).__name__}: {error})"]
            images = record.get("images") or []
            if kind == "text" and num_placeholders:
                problems.append(f"{num_placeholders} `<image_placeholder>` in a text record, which has no images")
            if kind == "understanding" and num_placeholders != len(images):
                problems.append(
                    f"{num_placeholders} `<image_placeholder>`/image items in the messages but {len(images)} images"
                )
            if kind == "understanding":
                problems += [problem for image in images if (problem := _image_problem(image))]
        else:
            caption = record.get("caption")
            if caption is None or not caption.strip():
                problems.append("missing or empty `caption`")
            else:
                length = self._generation_length(caption)
            problems += [problem] if (problem := _image_problem(record.get("image"))) else []
        if length is not None and length > self.max_length:
            problems.append(f"{length} tokens, longer than max_length={self.max_length}")
        return problems

    def encode(self, record: dict, generator: torch.Generator | None = None) -> dict:
        """
        One record as the contract's per-sample tensors. `generator` decides the CFG caption drop (see
        `sample_generator`; torch's global generator when None). Any failure is a `BadSampleError` naming the record.
        """
        kind, record_id = record["kind"], record["record_id"]
        try:
            sample = self._encode(record, generator)
        except Exception as error:
            reason = str(error) if isinstance(error, BadSampleError) else f"{type(error).__name__}: {error}"
            raise BadSampleError(f"Cannot encode {kind} record {record_id}: {reason}") from error
        length = len(sample["input_ids"])
        if length > self.max_length:
            raise BadSampleError(
                f"Cannot encode {kind} record {record_id}: {length} tokens, longer than max_length={self.max_length}; "
                "raise `max_length` or drop the record (`on_bad_sample='skip'`)."
            )
        return {**sample, "kind": kind, "record_id": record_id}

    def _encode(self, record: dict, generator: torch.Generator | None) -> dict:
        if record.get("load_problem"):
            raise BadSampleError(record["load_problem"])
        kind = record["kind"]
        if kind == "generation":
            if self.vq_codes is None:
                raise ValueError("generation records need VQ codes: pass `vq_codes=VQCodeCache(...)` to the encoder")
            caption = record.get("caption")
            if caption is None or not caption.strip():
                raise BadSampleError("missing or empty `caption`")
            drop = self.cfg_drop_prob > 0 and bool(torch.rand((), generator=generator) < self.cfg_drop_prob)
            prompt_ids = self._generation_prompt_ids(caption, drop)
            codes = self.vq_codes.get(record["image"]).to(torch.long)
            if codes.numel() != self.num_image_tokens:
                raise ValueError(
                    f"the VQ model gives {codes.numel()} codes per image but the processor expects "
                    f"num_image_tokens={self.num_image_tokens}; use the processor and model of one checkpoint"
                )
            ignore_prompt = torch.full_like(prompt_ids, IGNORE_INDEX)
            image_positions = torch.full_like(codes, self.processor.pad_token_id)
            input_ids = torch.cat([prompt_ids, image_positions, torch.tensor([self.processor.eoi_token_id])])
            image_token_ids = torch.cat([ignore_prompt, codes, torch.tensor([IGNORE_INDEX])])
            return {
                "input_ids": input_ids,
                "labels": torch.full_like(input_ids, IGNORE_INDEX),
                "image_token_ids": image_token_ids,
                "image_labels": image_token_ids.clone(),
            }

        input_ids, labels, num_placeholders = self._encode_chat(record)
        sample = {
            "input_ids": input_ids,
            "labels": labels,
            "image_token_ids": torch.full_like(input_ids, IGNORE_INDEX),
            "image_labels": torch.full_like(input_ids, IGNORE_INDEX),
        }
        images = record.get("images") or []
        if num_placeholders != len(images):
            raise BadSampleError(f"{num_placeholders} `<image_placeholder>`/image items but {len(images)} images")
        if kind == "understanding":
            size = self.processor.image_processor.image_size
            if images:
                pixel_values = self.processor.image_processor(
                    [_open_image(path) for path in images], return_tensors="pt"
                ).pixel_values
            else:
                pixel_values = torch.zeros(0, 3, size, size)
            sample["pixel_values"] = pixel_values
        return sample


def _image_problem(path: str | None) -> str:
    if not path:
        return "no image path"
    if not os.path.isfile(path):
        return f"image {path} does not exist"
    try:
        _open_image(path)
    except Exception as error:
        return f"image {path} is unreadable ({type(error).__name__}: {error})"
    return ""


# Bad samples


def find_bad_samples(dataset: datasets.Dataset, encoder: JanusProSampleEncoder) -> list[BadSample]:
    """Every record of `dataset` that cannot be trained on, with its reasons (all checked, none encoded)."""
    bad = []
    for record in dataset:
        problems = encoder.problems(record)
        if problems:
            bad.append(BadSample(record["kind"], record["record_id"], "; ".join(problems)))
    return bad


def check_samples(
    datasets_by_kind: dict[str, datasets.Dataset],
    encoder: JanusProSampleEncoder,
    on_bad_sample: str = "fail",
    max_listed: int = 5,
    shard: tuple[int, int] = (0, 1),
    gather=None,
) -> dict[str, datasets.Dataset]:
    """
    Check every record of every kind before training. `on_bad_sample="fail"` raises one `BadSampleError` with the
    count per kind and the first `max_listed` offending record ids and reasons of each; `"skip"` drops them, logs the
    counts and returns the datasets without them.

    Several processes split the work: with `shard=(rank, world_size)` each checks its contiguous share of every
    kind, and `gather` (e.g. `accelerate.utils.gather_object`) joins the bad samples found by all, so every process
    reaches the same verdict having decoded only its share of the images.
    """
    if on_bad_sample not in ("fail", "skip"):
        raise ValueError(f"`on_bad_sample` must be 'fail' or 'skip', got {on_bad_sample!r}.")
    index, num_shards = shard
    found = []
    for kind, dataset in datasets_by_kind.items():
        share = dataset.shard(num_shards, index, contiguous=True) if num_shards > 1 else dataset
        found += find_bad_samples(share, encoder)
    if gather is not None:
        found = gather(found)
    bad_by_kind = {}
    for sample in found:
        bad_by_kind.setdefault(sample.kind, []).append(sample)
    if not bad_by_kind:
        return dict(datasets_by_kind)
    summary = []
    for kind, bad in bad_by_kind.items():
        listed = "; ".join(f"{sample.record_id}: {sample.reason}" for sample in bad[:max_listed])
        more = f"; ... and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
        summary.append(f"{kind}: {len(bad)} of {len(datasets_by_kind[kind])} records ({listed}{more})")
    if on_bad_sample == "fail":
        raise BadSampleError(
            "Bad training samples found before training:\n  " + "\n  ".join(summary) + "\nFix or remove them, or pass "
            "`--on_bad_sample skip` to train without them."
        )
    logger.warning("Skipping bad training samples:\n  " + "\n  ".join(summary))
    kept = {}
    for kind, dataset in datasets_by_kind.items():
        bad_ids = {sample.record_id for sample in bad_by_kind.get(kind, [])}
        kept[kind] = dataset.filter(lambda record: record["record_id"] not in bad_ids) if bad_ids else dataset
    return kept


__all__ = [
    "DATA_KINDS",
    "IGNORE_INDEX",
    "BadSample",
    "BadSampleError",
    "JanusProSampleEncoder",
    "VQCodeCache",
    "check_samples",
    "find_bad_samples",
    "load_samples",
    "sample_generator",
]
