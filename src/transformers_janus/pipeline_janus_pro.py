"""
Text(+image)-to-image generation with Janus-Pro as a diffusers `DiffusionPipeline`.

`save_pretrained` copies this module (and the modules it imports) into the saved directory, where diffusers loads it
as remote code without this package: it imports the package's modules by relative imports only.
"""

import importlib.util
import math
import os
from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import logging, replace_example_docstring
from transformers import PreTrainedModel, ProcessorMixin

from .image_generation import JACOBI_WINDOW
from .lora_loading import JanusProLoraLoaderMixin
from .model_card import model_card_for, push_folder_with_card
from .packaging import check_pipeline_can_be_saved, package_pipeline_directory


logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from transformers_janus import JanusProImagePipeline

        >>> pipe = JanusProImagePipeline.from_pretrained("deepseek-ai/Janus-Pro-1B", torch_dtype=torch.bfloat16)
        >>> images = pipe(
        ...     ["a red apple on a table", "a cat in the snow"],
        ...     num_images_per_prompt=4,
        ...     guidance_scale=5.0,
        ...     generator=torch.Generator().manual_seed(0),
        ... ).images
        >>> images[0].save("apple.png")
        ```
"""

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class JanusProImagePipeline(JanusProLoraLoaderMixin, DiffusionPipeline):
    r"""
    Pipeline for text-to-image (and text+image-to-image) generation with Janus-Pro: the language model predicts the
    576 VQ tokens of an image one by one under classifier-free guidance, then the VQ decoder paints them.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.). LoRA adapters load
    the diffusers way ([`JanusProLoraLoaderMixin`]: `load_lora_weights`, `set_adapters`, `fuse_lora`,
    `unload_lora_weights`, ...) into `model`, which the chat pipeline can share.

    Args:
        model ([`JanusProForConditionalGeneration`]):
            The Janus-Pro model: language model, image head and VQ tokenizer in one.
        processor ([`JanusProProcessor`]):
            Its processor: chat format, tokenizer, understanding-image preprocessing and pixel postprocessing.
    """

    model_cpu_offload_seq = "model"
    _callback_tensor_inputs = ["image_tokens"]

    # Annotated with the base classes: a saved pipeline loaded as remote code reloads a component's module, so its class
    # is a second class object of the same name and diffusers' type check of the components would warn.
    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin):
        super().__init__()
        self.register_modules(model=model, processor=processor)
        self._interrupt = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "JanusProImagePipeline":
        r"""
        Load a saved pipeline (a directory with `model_index.json`), or build one from a model directory or hub id in
        DeepSeek's format or ours, or in transformers' built-in `janus` format (converted on the fly, in memory; see
        `transformers_janus.conversion` to convert it once on disk). `torch_dtype`/`dtype`, `device_map` and hub
        arguments go to the model.
        """
        from transformers.utils import cached_file

        from .modeling_janus_pro import JanusProForConditionalGeneration
        from .processing_janus_pro import JanusProProcessor
        from .utils import checkpoint_format, hub_kwargs_from

        hub_kwargs = hub_kwargs_from(kwargs)
        model_index = cached_file(
            pretrained_model_name_or_path, "model_index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        subfolders = {"model": "", "processor": ""}
        if model_index is not None:  # a saved pipeline: one subfolder per component
            subfolders = {name: os.path.join(hub_kwargs.get("subfolder", ""), name) for name in subfolders}
        dtype = kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None)
        kwargs.pop("subfolder", None)
        hub_kwargs.pop("subfolder", None)
        if model_index is None and checkpoint_format(pretrained_model_name_or_path, **hub_kwargs) == "janus":
            model, processor = cls._convert_builtin_janus(pretrained_model_name_or_path, dtype, kwargs, hub_kwargs)
            return cls(model=model.eval(), processor=processor)
        model = JanusProForConditionalGeneration.from_pretrained(
            pretrained_model_name_or_path, dtype=dtype, subfolder=subfolders["model"], **kwargs
        )
        processor = JanusProProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolders["processor"], **hub_kwargs
        )
        return cls(model=model.eval(), processor=processor)

    @staticmethod
    def _convert_builtin_janus(
        pretrained_model_name_or_path: str | os.PathLike, dtype, kwargs: dict, hub_kwargs: dict
    ) -> tuple[PreTrainedModel, ProcessorMixin]:
        """Model and processor of a checkpoint in transformers' built-in `janus` format, converted to ours in memory."""
        from transformers import JanusForConditionalGeneration, JanusProcessor

        from .utils import SPECIAL_TOKENS, read_special_token_ids

        # The converters are the package's (a saved pipeline's copy of this module does not carry them), so they are
        # imported by name rather than relatively.
        if importlib.util.find_spec("transformers_janus") is None:
            raise ValueError(
                f"{pretrained_model_name_or_path} is in transformers' built-in `janus` format; converting it needs the "
                "transformers-janus package (`pip install transformers-janus`)."
            )
        conversion = importlib.import_module("transformers_janus.conversion")
        builtin = JanusForConditionalGeneration.from_pretrained(pretrained_model_name_or_path, dtype=dtype, **kwargs)
        token_ids = read_special_token_ids(pretrained_model_name_or_path, **hub_kwargs)
        token_ids = {name: token_ids[name] for name in SPECIAL_TOKENS if name != "image_token_id" and name in token_ids}
        model = conversion.janus_to_janus_pro(builtin, token_ids)
        processor = JanusProcessor.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        return model, conversion.janus_processor_to_janus_pro(processor)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """
        `DiffusionPipeline.save_pretrained`: `model/` and `processor/` with their code, and a `model_index.json` and
        loader module with which `DiffusionPipeline.from_pretrained(directory, trust_remote_code=True)` loads the
        directory where this package is not installed (see `packaging.package_pipeline_directory`). A PEFT-wrapped
        model is refused before anything is written, with how to merge or save its adapter.
        """
        check_pipeline_can_be_saved(self)
        return super().save_pretrained(save_directory, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
        *,
        tags: list[str] | None = None,
        training_summary=None,
    ) -> str:
        """
        Upload the saved pipeline as `DiffusionPipeline.push_to_hub` does, with our card (diffusers writes its generic
        template): `base_model` (the Hub id the model came from), `library_name: diffusers`, `pipeline_tag:
        text-to-image`, how to load it with and without this package, and `training_summary` if given.
        """
        if subfolder:
            raise ValueError(
                f"`subfolder` ({subfolder!r}) is not supported: a pipeline is pushed at the root of its repository, "
                "where `model_index.json` and its card belong. Push it to a repository of its own."
            )
        check_pipeline_can_be_saved(self)
        return push_folder_with_card(
            repo_id,
            lambda directory: self.save_pretrained(directory, safe_serialization=safe_serialization, variant=variant),
            lambda full_id: model_card_for(
                self, repo_id=full_id, training_summary=training_summary, tags=[tags] if isinstance(tags, str) else tags
            ),
            commit_message=commit_message or "Upload pipeline",
            private=private,
            token=token,
            create_pr=create_pr,
        )

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Write `model_index.json`, then make the directory loadable without this package (`save_pretrained` calls it
        once the components are written)."""
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
        package_pipeline_directory(self, save_directory)

    def encode_prompt(
        self,
        prompt: list[str],
        negative_prompt: list[str] | None,
        image: list[PIL.Image.Image | None] | None,
        num_images_per_prompt: int,
        device: torch.device,
    ) -> dict[str, torch.Tensor]:
        """
        Tokenize the prompts in DeepSeek's generation format (empty system prompt, `<begin_of_image>` last), with an
        `<image_placeholder>` before the text of prompts that come with an image; one row per image to generate.
        """
        images = image if image is not None else [None] * len(prompt)
        texts = self.processor.build_image_generation_prompt(prompt, with_image=[picture is not None for picture in images])
        texts = [text for text in texts for _ in range(num_images_per_prompt)]
        pictures = [[picture] if picture is not None else [] for picture in images for _ in range(num_images_per_prompt)]
        inputs = self.processor(text=texts, images=pictures, padding=True, return_tensors="pt")
        encoded = {"input_ids": inputs["input_ids"].to(device), "attention_mask": inputs["attention_mask"].to(device)}
        if "pixel_values" in inputs:
            encoded["pixel_values"] = inputs["pixel_values"].to(device, self.model.dtype)
        if negative_prompt is not None:
            negative_texts = [
                text for text in self.processor.build_image_generation_prompt(negative_prompt)
                for _ in range(num_images_per_prompt)
            ]
            negative = self.processor(text=negative_texts, padding=True, return_tensors="pt")
            encoded["negative_input_ids"] = negative["input_ids"].to(device)
            encoded["negative_attention_mask"] = negative["attention_mask"].to(device)
        return encoded

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        image,
        num_images_per_prompt,
        guidance_scale,
        temperature,
        top_k,
        top_p,
        generator,
        output_type,
        callback_on_step_end_tensor_inputs,
        height=None,
        width=None,
        num_inference_steps=None,
    ):
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
            raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not all(isinstance(text, str) for text in prompts):
            raise ValueError(f"Every `prompt` must be a string, got {[type(text).__name__ for text in prompts]}.")
        if negative_prompt is not None:
            negatives = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
            if len(negatives) not in (1, len(prompts)):
                raise ValueError(
                    f"`negative_prompt` has {len(negatives)} entries for {len(prompts)} prompts; pass one, or one per "
                    "prompt."
                )
        if image is not None and isinstance(image, (list, tuple)) and len(image) != len(prompts):
            raise ValueError(f"`image` has {len(image)} entries for {len(prompts)} prompts; pass one (or None) per prompt.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be >= 0 and finite (1.0 disables guidance), got {guidance_scale}.")
        if math.isnan(temperature) or temperature <= 0:
            raise ValueError(f"`temperature` must be > 0 (use `top_k=1` for greedy decoding), got {temperature}.")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive integer or None, got {top_k!r}.")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {top_p}.")
        num_images = len(prompts) * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != num_images:
            raise ValueError(
                f"You have passed a list of generators of length {len(generator)}, but requested {num_images} images "
                f"({len(prompts)} prompts x {num_images_per_prompt}). Pass one generator, or exactly one per image."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        image_size = self.model.config.image_size
        for name, value in (("height", height), ("width", width)):
            if value is not None and value != image_size:
                raise ValueError(
                    f"`{name}={value}`: the image size is fixed by the checkpoint, which generates "
                    f"{image_size}x{image_size} images ({self.model.config.num_image_tokens} image tokens); leave "
                    f"`height` and `width` unset (or resize the results)."
                )
        if num_inference_steps is not None:
            raise ValueError(
                f"`num_inference_steps={num_inference_steps}`: Janus-Pro has no denoising steps to set. It draws the "
                f"{self.model.config.num_image_tokens} image tokens one by one and decodes them in one pass; leave "
                "`num_inference_steps` unset (`temperature`, `top_k` and `top_p` control the sampling)."
            )
        unknown = set(callback_on_step_end_tensor_inputs or []) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {sorted(unknown)}; the available ones are "
                f"{self._callback_tensor_inputs}."
            )

    def postprocess(self, decoded: torch.Tensor, output_type: str):
        """Pixels as diffusers returns them; see [`JanusProImageProcessor.postprocess`]."""
        return self.processor.postprocess(decoded, output_type=output_type)

    def check_callback_image_tokens(self, returned, image_tokens: torch.LongTensor) -> torch.LongTensor:
        """Validate the `image_tokens` a `callback_on_step_end` returned: the same shape as the tokens it was given."""
        if not torch.is_tensor(returned) or returned.dtype != torch.long or returned.shape != image_tokens.shape:
            got = f"a {returned.dtype} tensor of shape {tuple(returned.shape)}" if torch.is_tensor(returned) else repr(returned)
            raise ValueError(
                "`callback_on_step_end` returned `image_tokens` that cannot replace the tokens so far: expected a "
                f"torch.long tensor of shape {tuple(image_tokens.shape)}, got {got}."
            )
        return returned.to(image_tokens.device)

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` from `callback_on_step_end` to stop the call after the current image token."""
        return self._interrupt

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] = None,
        negative_prompt: str | list[str] | None = None,
        image: PIL.Image.Image | list[PIL.Image.Image | None] | None = None,
        guidance_scale: float = 5.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        unconditional_image: bool = False,
        cache_implementation: str = "dynamic",
        prepack_weights: bool = False,
        decoding: str = "sequential",
        jacobi_window: int = JACOBI_WINDOW,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["image_tokens"],
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Function invoked when calling the pipeline for generation.

        Args:
            prompt (`str` or `list[str]`):
                The prompt or prompts that describe the images.
            negative_prompt (`str` or `list[str]`, *optional*):
                What the images should not show: the unconditional branch of the guidance reads it instead of
                DeepSeek's pad tokens.
            image (`PIL.Image.Image` or `list`, *optional*):
                A picture per prompt (or `None` for some) to condition on, read by the understanding encoder as in chat.
            guidance_scale (`float`, *optional*, defaults to 5.0):
                Classifier-free guidance weight `w` in `uncond + w * (cond - uncond)`; 1.0 disables guidance and halves
                the work.
            temperature (`float`, *optional*, defaults to 1.0):
                Sampling temperature of the guided image-token logits.
            top_k (`int`, *optional*):
                Sample among the `top_k` most likely tokens only; `top_k=1` is greedy decoding.
            top_p (`float`, *optional*):
                Nucleus sampling: the smallest set of tokens whose probability reaches `top_p`.
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images per prompt.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator for all images, or one per image (then an image depends only on its own generator, so in
                float32 a batch gives the same images as running each prompt alone).
            unconditional_image (`bool`, *optional*, defaults to `False`):
                Whether the unconditional branch also sees the prompt's `image` (guidance then follows the text only).
            cache_implementation (`str`, *optional*, defaults to `"dynamic"`):
                `"static"` preallocates the KV cache.
            prepack_weights (`bool`, *optional*, defaults to `False`):
                CPU only: run the decoding steps on oneDNN with weights reordered once per call (faster at small batches,
                costs a temporary copy of the language model's weights); see `generate_images`.
            decoding (`str`, *optional*, defaults to `"sequential"`):
                `"jacobi"` draws several image tokens per forward pass (speculative Jacobi decoding) from the same
                distribution, greedy tokens unchanged; see `generate_images`. `callback_on_step_end` is then called
                once per token when every image has drawn it, and cannot change tokens.
            jacobi_window (`int`, *optional*, defaults to 16):
                Positions per forward pass with `decoding="jacobi"`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (floats in [0, 1], NHWC), `"pt"` (floats in [0, 1], NCHW) or `"latent"` (the image
                tokens, `(num_images, num_image_tokens)`).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`ImagePipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, `PipelineCallback`, `MultiPipelineCallbacks`, *optional*):
                Called after each image token as `callback_on_step_end(self, step, timestep, callback_kwargs)`, with the
                tensors named in `callback_on_step_end_tensor_inputs` in `callback_kwargs`. Decoding is autoregressive,
                with no scheduler: `step` is the index of the image token just drawn (0 to `num_image_tokens - 1`) and
                `timestep` the number of image tokens still to draw after it (`num_image_tokens - 1 - step`, so it
                counts down to 0 at the last step as diffusers' timesteps do). The callback returns a dict (or
                `None`): an `image_tokens` entry, a `LongTensor` of the same shape, replaces the tokens drawn so far
                (its last column is what the next step reads). Setting `pipe._interrupt = True` ends the call after
                this step: with `output_type="latent"` it returns the `(num_images, step + 1)` tokens drawn so far;
                the pixel outputs need every token and raise a `ValueError` saying so. The flag belongs to the
                pipeline object, so threads sharing one pipeline share it.
            callback_on_step_end_tensor_inputs (`list`, *optional*, defaults to `["image_tokens"]`):
                Tensors passed to the callback: `image_tokens` is `(num_images, step + 1)`.
            height (`int`, *optional*), width (`int`, *optional*):
                Accepted only as the checkpoint's own size (`model.config.image_size`, 384 for Janus-Pro): the model
                generates one size, and any other value is refused with a message saying so.
            num_inference_steps (`int`, *optional*):
                Refused when set, with a message saying why: decoding draws `num_image_tokens` tokens, with no
                denoising steps. (Accepted as keywords because diffusers users pass these by habit.)

        Examples:

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images, as a list of PIL images or an array/tensor.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs
        self.check_inputs(
            prompt,
            negative_prompt,
            image,
            num_images_per_prompt,
            guidance_scale,
            temperature,
            top_k,
            top_p,
            generator,
            output_type,
            callback_on_step_end_tensor_inputs,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
        )
        prompt = [prompt] if isinstance(prompt, str) else prompt
        if isinstance(negative_prompt, str) or (isinstance(negative_prompt, list) and len(negative_prompt) == 1):
            negative_prompt = [negative_prompt if isinstance(negative_prompt, str) else negative_prompt[0]] * len(prompt)
        if image is not None and not isinstance(image, (list, tuple)):
            image = [image] * len(prompt)
        device = self._execution_device

        # 2. Encode the prompts, one row per image (`generate_images` checks that prompt and image fit the context)
        encoded = self.encode_prompt(prompt, negative_prompt, image, num_images_per_prompt, device)
        num_images = encoded["input_ids"].shape[0]
        if isinstance(generator, torch.Generator) and num_images == 1:
            generator = [generator]

        # 3. Decode the image tokens under classifier-free guidance
        self._interrupt = False
        num_image_tokens = self.model.config.num_image_tokens
        with self.progress_bar(total=num_image_tokens) as progress_bar:

            def on_step(step: int, image_tokens: torch.LongTensor) -> dict | None:
                progress_bar.update()
                if callback_on_step_end is None:
                    return None
                local_values = {"image_tokens": image_tokens}
                callback_kwargs = {name: local_values[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, step, num_image_tokens - 1 - step, callback_kwargs) or {}
                update = {}
                if "image_tokens" in callback_outputs:
                    update["image_tokens"] = self.check_callback_image_tokens(callback_outputs["image_tokens"], image_tokens)
                if self.interrupt:
                    update["stop"] = True
                return update or None

            image_tokens = self.model.generate_images(
                **encoded,
                guidance_scale=guidance_scale,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                unconditional_image=unconditional_image,
                cache_implementation=cache_implementation,
                prepack_weights=prepack_weights,
                decoding=decoding,
                jacobi_window=jacobi_window,
                step_callback=on_step,
            ).image_tokens

        # 4. Paint the tokens with the VQ decoder, all images in one batch
        if output_type == "latent":
            images = image_tokens
        elif image_tokens.shape[1] < num_image_tokens:
            self.maybe_free_model_hooks()
            raise ValueError(
                f"The call was interrupted after {image_tokens.shape[1]} of {num_image_tokens} image tokens, and "
                f"`output_type={output_type!r}` needs all of them: the VQ decoder paints a whole token grid. Pass "
                '`output_type="latent"` to get the tokens drawn before the interruption.'
            )
        else:
            images = self.postprocess(self.model.decode_image_tokens(image_tokens), output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


__all__ = ["JanusProImagePipeline"]
