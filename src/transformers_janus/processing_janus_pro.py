"""Processor for Janus-Pro: DeepSeek's `VLChatProcessor` (chat format, image placeholders, left padding)."""

import numpy as np
import torch
from transformers import AutoTokenizer, TokenizersBackend
from transformers.models.auto.tokenization_auto import get_tokenizer_config
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import ImageInput
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack
from transformers.tokenization_utils_base import PreTokenizedInput, TextInput
from transformers.utils import logging

from .model_card import model_card_for, push_folder_with_card
from .utils import unconditional_input_ids
from .image_processing_janus_pro import JanusProImageProcessor, JanusProImageProcessorKwargs


logger = logging.get_logger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)

# DeepSeek's "deepseek" conversation format (janus/utils/conversation.py, SeparatorStyle.DeepSeek), as a chat template:
# `{system}\n\n` (dropped when the system prompt is empty), `<|User|>: {content}\n\n`,
# `<|Assistant|>: {answer}<eos>`, and `<|Assistant|>:` as the generation prompt. Contents are stripped as DeepSeek's
# processor strips them; an empty message renders as `{role}:` as in DeepSeek's format. Without a system message the
# understanding system prompt is used; an explicit one, even empty, overrides it. Content items are joined with "\n",
# an image item renders as `<image_placeholder>`. `{% generation %}` marks answers for `return_assistant_tokens_mask`.
# The template holds no BOS: the tokenizer adds it when the processor tokenizes.
CHAT_TEMPLATE = (
    "{%- set default_system_prompt = '" + DEFAULT_SYSTEM_PROMPT + "' -%}"
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}"
    "{%- for item in content -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image_placeholder>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- else -%}{{ raise_exception('Janus-Pro messages hold text and image items only, got type ' + item['type']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_prompt = render_content(messages[0]['content']) | trim -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_prompt = default_system_prompt -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- if system_prompt -%}{{ system_prompt + '\\n\\n' }}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set content = render_content(message['content']) | trim -%}"
    "{%- if message['role'] in ['user', '<|User|>'] -%}"
    "{%- if content -%}{{ '<|User|>: ' + content + '\\n\\n' }}{%- else -%}{{ '<|User|>:' }}{%- endif -%}"
    "{%- elif message['role'] in ['assistant', '<|Assistant|>'] -%}"
    "{%- if content -%}{{ '<|Assistant|>: ' }}{%- generation -%}{{ content + eos_token }}{%- endgeneration -%}"
    "{%- else -%}{{ '<|Assistant|>:' }}{%- endif -%}"
    "{%- else -%}"
    "{{ raise_exception('Janus-Pro chats hold a first system message, then user and assistant messages; got role '"
    " + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|>:' }}{%- endif -%}"
)


class JanusProProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: JanusProImageProcessorKwargs


def _is_empty(value) -> bool:
    """True for None and for (nested) lists that hold nothing: what multimodal harnesses pass for absent inputs."""
    if value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_empty(item) for item in value)
    return False


class JanusProProcessor(ProcessorMixin):
    r"""
    Janus-Pro processor: a [`JanusProImageProcessor`] and the DeepSeek-LLM tokenizer, behaving as DeepSeek's
    `VLChatProcessor`.

    Each `<image_placeholder>` in the text becomes `<begin_of_image>` + `num_image_tokens` x `<image_placeholder>` +
    `<end_of_image>`; the tokenizer prepends BOS; batches are left-padded with `<｜▁pad▁｜>`. The chat template
    implements DeepSeek's "deepseek" format, so `apply_chat_template` and the `image-text-to-text` pipeline work.
    Special tokens are looked up by their text (their ids differ between published checkpoints) and exposed as
    `image_token_id`, `boi_token_id`, `eoi_token_id`, `pad_token_id`, `bos_token_id` and `eos_token_id`.

    DeepSeek's checkpoint directories (`VLChatProcessor` / `VLMImageProcessor` configs) load as they are.

    Args:
        image_processor ([`JanusProImageProcessor`]): The image processor.
        tokenizer ([`PreTrainedTokenizerBase`]): The DeepSeek-LLM tokenizer of the checkpoint.
        chat_template (`str`, *optional*): A Jinja chat template; defaults to DeepSeek's "deepseek" format.
        num_image_tokens (`int`, *optional*, defaults to 576): `<image_placeholder>` tokens per image.

    Example:

    ```python
    >>> from transformers_janus import JanusProProcessor
    >>> processor = JanusProProcessor.from_pretrained("deepseek-ai/Janus-Pro-1B")
    >>> image, question = {"type": "image", "url": "cat.png"}, {"type": "text", "text": "Describe it."}
    >>> messages = [{"role": "user", "content": [image, question]}]
    >>> inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    ```"""

    # As `register_for_auto_class("AutoProcessor")`: `save_pretrained` copies this code and writes `auto_map` (see
    # `JanusProForConditionalGeneration.save_pretrained`).
    _auto_class = "AutoProcessor"
    valid_processor_kwargs = JanusProProcessorKwargs
    text_kwargs = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

    image_token = "<image_placeholder>"
    boi_token = "<begin_of_image>"
    eoi_token = "<end_of_image>"
    pad_token = "<｜▁pad▁｜>"
    bos_token = "<｜begin▁of▁sentence｜>"
    eos_token = "<｜end▁of▁sentence｜>"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens: int = 576):
        if chat_template is None:
            chat_template = CHAT_TEMPLATE
        self.num_image_tokens = num_image_tokens
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

        self.image_token_id = self._token_id(self.image_token)
        self.boi_token_id = self._token_id(self.boi_token)
        self.eoi_token_id = self._token_id(self.eoi_token)
        self.pad_token_id = self._token_id(self.pad_token)
        self.bos_token_id = self._token_id(self.bos_token)
        self.eos_token_id = self._token_id(self.eos_token)
        self.image_token_ids = [self.image_token_id, self.boi_token_id, self.eoi_token_id]

        # DeepSeek pads with `<｜▁pad▁｜>` on the left: generation continues from the last position of every row.
        if tokenizer.pad_token != self.pad_token:
            if tokenizer.pad_token is not None:
                logger.warning_once(
                    f"The tokenizer pads with {tokenizer.pad_token!r}; Janus-Pro pads with {self.pad_token!r}, "
                    "which the processor uses instead."
                )
            tokenizer.pad_token = self.pad_token
        tokenizer.padding_side = "left"

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = None,
        tags: list[str] | None = None,
    ):
        """
        Upload the processor as `ProcessorMixin.push_to_hub` does, with our card instead of transformers' generic one
        (see `model_card.card_to_upload`: pushed after the model into the same repository, the model's card stays).
        `max_shard_size` is taken for the generic signature; a processor has no weights to shard.
        """
        return push_folder_with_card(
            repo_id,
            lambda directory: self.save_pretrained(directory),
            lambda full_id: model_card_for(self, repo_id=full_id, tags=[tags] if isinstance(tags, str) else tags),
            commit_message=commit_message or "Upload processor",
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            raise ValueError(
                f"The tokenizer has no {token!r} token, which Janus-Pro needs; load the tokenizer of a Janus-Pro "
                "checkpoint (or add the token with `tokenizer.add_special_tokens`)."
            )
        return token_id

    @classmethod
    def _load_subprocessors(cls, pretrained_model_name_or_path, **kwargs):
        """
        Load our image processor directly: DeepSeek's `preprocessor_config.json` names `VLMImageProcessor`, which
        `AutoImageProcessor` resolves only once this package registered its alias (and, in a saved directory with
        `auto_map`, only with `trust_remote_code`, although the class is right here).
        """
        subfolder = kwargs.pop("subfolder", "")
        image_processor = JanusProImageProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [image_processor, cls._load_tokenizer(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)]

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """transformers < 5.25 loads the sub-processors here."""
        return cls._load_subprocessors(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        """
        transformers >= 5.25 loads the sub-processors here, with the Auto classes; hand it ours, which it keeps as
        it keeps sub-processors a caller passed in.
        """
        if kwargs.get("image_processor") is None or kwargs.get("tokenizer") is None:
            load_kwargs = {key: value for key, value in kwargs.items() if key not in ("image_processor", "tokenizer")}
            loaded = cls._load_subprocessors(pretrained_model_name_or_path, **load_kwargs)
            for name, sub_processor in zip(("image_processor", "tokenizer"), loaded):
                if kwargs.get(name) is None:
                    kwargs[name] = sub_processor
        return super()._resolve_subprocessors(pretrained_model_name_or_path, processor_dict, **kwargs)

    @staticmethod
    def _load_tokenizer(pretrained_model_name_or_path, **kwargs):
        """
        DeepSeek's tokenizer_config.json names `LlamaTokenizerFast` for a byte-level BPE tokenizer.json, which
        `AutoTokenizer` reads as `TokenizersBackend` with a warning a user cannot act on; read it so directly.
        """
        tokenizer_config = get_tokenizer_config(pretrained_model_name_or_path, **kwargs)
        declared = (tokenizer_config.get("tokenizer_class") or "").removesuffix("Fast")
        if (
            declared == "LlamaTokenizer"
            and "auto_map" not in tokenizer_config
            and TokenizersBackend._tokenizer_json_has_byte_level(pretrained_model_name_or_path, **kwargs)
        ):
            return TokenizersBackend.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)

    def __call__(
        self,
        text: TextInput | PreTokenizedInput | list[TextInput] | list[PreTokenizedInput] = None,
        images: ImageInput | None = None,
        videos=None,
        audio=None,
        **kwargs: Unpack[JanusProProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Tokenize `text` with every `<image_placeholder>` expanded to the image's token span, and preprocess `images`.

        Args:
            text (`str` or `list[str]`): One text or a batch; each `<image_placeholder>` stands for one image.
            images (`ImageInput` or `list`, *optional*):
                The images in text order: a flat list, or one list per text (`[[], [image_a, image_b]]`).
            videos, audio (*optional*):
                Accepted empty (`None` or `[]`, as multimodal harnesses pass them) and ignored; Janus-Pro has neither.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` (left-padded), and `pixel_values`
            `(num_images, 3, image_size, image_size)` when there are images.
        """
        audios = kwargs.pop("audios", None)
        for name, value in (("videos", videos), ("audio", audio), ("audios", audios)):
            if not _is_empty(value):
                raise ValueError(
                    f"{self.__class__.__name__} handles text and images only, but `{name}` were passed; drop them "
                    f"(`{name}=None`)."
                )
        if isinstance(text, str):
            text = [text]
        self._check_text(text)
        images = self._check_images(text, images)
        return super().__call__(images=images, text=text, **kwargs)

    @staticmethod
    def _check_text(text) -> None:
        """A batch is a non-empty list of strings (None means no text at all, as for images alone)."""
        if text is None:
            return
        if not isinstance(text, (list, tuple)) or not text:
            raise ValueError(
                f"`text` must be a string or a non-empty list of strings, got {text!r}; pass at least one prompt."
            )
        bad = [index for index, sample in enumerate(text) if not isinstance(sample, (str, list, tuple))]
        if bad:
            raise ValueError(
                f"`text` entries must be strings, but entries {bad} are {[type(text[i]).__name__ for i in bad]}; "
                "drop them or replace them with (possibly empty) strings."
            )

    def _check_images(self, text: list[str] | None, images) -> list | None:
        """Match the images to the `<image_placeholder>` of each text; returns them as a flat list in text order."""
        if _is_empty(images):
            images = None
        is_nested = isinstance(images, (list, tuple)) and any(isinstance(item, (list, tuple)) for item in images)
        if is_nested and not all(isinstance(item, (list, tuple)) for item in images):
            raise ValueError(
                "`images` mixes images and lists of images; pass either a flat list in text order or one list per "
                "text."
            )
        if images is None:
            flat_images = []
        elif is_nested:
            flat_images = [image for sample_images in images for image in sample_images]
        elif isinstance(images, (list, tuple)):
            flat_images = list(images)
        elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            flat_images = list(images)
        else:
            flat_images = [images]
        if text is None:
            return flat_images or None

        counts = [sample.count(self.image_token) for sample in text]
        if is_nested:
            if len(images) != len(text):
                raise ValueError(
                    f"`images` has one list per text but {len(images)} lists for {len(text)} texts; pass one list of "
                    "images per text (an empty list for a text without images)."
                )
            for index, (count, sample_images) in enumerate(zip(counts, images)):
                if count != len(sample_images):
                    raise ValueError(
                        f"{count} `{self.image_token}` in text {index} but {len(sample_images)} images for it; pass "
                        f"one image per `{self.image_token}`."
                    )
        elif sum(counts) != len(flat_images):
            raise ValueError(
                f"{sum(counts)} `{self.image_token}` in the text{'s' if len(text) > 1 else ''} (per text: {counts}) "
                f"but {len(flat_images)} images; pass one image per `{self.image_token}`, in text order."
            )
        return flat_images or None

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.boi_token + self.image_token * self.num_image_tokens + self.eoi_token

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def build_image_generation_prompt(
        self, prompt: str | list[str], with_image: bool | list[bool] = False
    ) -> str | list[str]:
        """
        Text-to-image prompt as DeepSeek builds it: the chat format with an empty system prompt, the generation prompt
        and `<begin_of_image>`, e.g. `<|User|>: {prompt}\\n\\n<|Assistant|>:<begin_of_image>`. A prompt `with_image`
        (one flag for all, or one per prompt) starts with an `<image_placeholder>`, as an image item does in chat.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        flags = [with_image] * len(prompts) if isinstance(with_image, bool) else list(with_image)
        conversations = [
            [
                {"role": "system", "content": ""},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample}] if image else sample},
            ]
            for sample, image in zip(prompts, flags)
        ]
        texts = self.apply_chat_template(conversations, add_generation_prompt=True)
        texts = [sample + self.boi_token for sample in texts]
        return texts[0] if isinstance(prompt, str) else texts

    def prepare_image_generation_inputs(self, prompt: str | list[str], **kwargs) -> BatchFeature:
        """
        Tokenize text-to-image prompts (see `build_image_generation_prompt`), left-padded. Pair the result with
        `get_unconditional_input_ids` for classifier-free guidance.
        """
        return self(text=self.build_image_generation_prompt(prompt), **kwargs)

    def get_unconditional_input_ids(
        self, input_ids: "torch.Tensor | list", attention_mask: "torch.Tensor | list | None" = None
    ) -> "torch.Tensor | list":
        """
        The classifier-free-guidance rows: each prompt with every token between its first real token (BOS) and its
        last (`<begin_of_image>`) replaced by the pad token, as DeepSeek's generation loop does. With a padded batch
        pass its `attention_mask`; the unconditional rows share it.
        """
        as_list = not torch.is_tensor(input_ids)
        ids = torch.as_tensor(input_ids).clone()
        squeeze = ids.ndim == 1
        if squeeze:
            ids = ids[None]
        mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).reshape(ids.shape)
        ids = unconditional_input_ids(ids, mask, self.pad_token_id)
        if squeeze:
            ids = ids[0]
        return ids.tolist() if as_list else ids

    def postprocess(self, images, output_type: str = "pil"):
        """Decoded VQ images in [-1, 1] to pixels; see [`JanusProImageProcessor.postprocess`]."""
        return self.image_processor.postprocess(images, output_type=output_type)

    def post_process_multimodal_output(
        self, generated_outputs, skip_special_tokens=True, generation_mode=None, **kwargs
    ):
        """Decode generated text (`generation_mode="text"`) or turn decoded VQ images into PIL images (`"image"`)."""
        if generation_mode is None or generation_mode == "text":
            return self.post_process_image_text_to_text(
                generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs
            )
        if generation_mode == "image":
            return self.postprocess(generated_outputs, output_type="pil")
        raise ValueError(f"`generation_mode` must be 'text' or 'image', got {generation_mode!r}.")


class VLChatProcessor(JanusProProcessor):
    """
    Loader alias for DeepSeek's `processor_config.json`, which names `"processor_class": "VLChatProcessor"`:
    `AutoProcessor` resolves that name among registered classes, so this alias is registered under it. Loading gives
    a [`JanusProProcessor`], which saves under its own name.
    """

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> JanusProProcessor:
        return JanusProProcessor.from_pretrained(*args, **kwargs)


__all__ = ["JanusProProcessor", "VLChatProcessor"]
