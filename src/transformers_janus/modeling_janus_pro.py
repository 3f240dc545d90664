"""PyTorch Janus-Pro model: SigLIP + Llama + diffusers' VQModel, joined by Janus-Pro's adaptors and image head."""

import contextlib
import os
from dataclasses import dataclass

import torch
from diffusers import VQModel
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, is_tracing, logging, torch_compilable_check
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_janus_pro import JanusProConfig
from .image_generation import JanusProImageGenerationMixin
from .deepseek_format import UNUSED_KEYS as DEEPSEEK_UNUSED_KEYS
from .deepseek_format import (
    DeepSeekCheckpointError,
    check_loaded_weights,
    check_local_shard_index,
    check_mismatched_weights,
    deepseek_weight_conversion,
    read_weight_files,
    use_mapped_generation_config,
)
from .model_card import model_card_for, push_folder_with_card
from .packaging import prepare_model_directory
from .utils import CheckpointError, checkpoint_format, hub_kwargs_from, separate_shared_storage


logger = logging.get_logger(__name__)

@dataclass
class JanusProModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    r"""
    Outputs of [`JanusProModel`]: the language model's last hidden state and cache, plus `image_outputs`, the
    understanding encoder output whose `pooler_output` holds the aligned image features `[num_images, tokens, hidden]`.
    """


@dataclass
class JanusProCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    r"""
    Outputs of [`JanusProForConditionalGeneration`]: text logits `[batch, seq, vocab]`, cache and `image_outputs` as
    in [`JanusProModelOutputWithPast`]; with `labels` or `image_labels`, the training losses.

    loss (`torch.FloatTensor` of shape `()`, *optional*):
        `text_loss + image_loss`.
    text_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Next-token cross-entropy of the text targets (`labels`, through `lm_head`); 0 when there are none.
    image_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Next-token cross-entropy of the image-token targets (`image_labels`, through the image head); 0 when there
        are none.
    image_logits (`torch.FloatTensor` of shape `(num_image_targets, num_vq_embeddings)`, *optional*):
        Image-head logits at the positions that predict an image target, in row-major order of the targets.
    """

    text_loss: torch.FloatTensor | None = None
    image_loss: torch.FloatTensor | None = None
    image_logits: torch.FloatTensor | None = None


class JanusProMlpProjector(nn.Module):
    """DeepSeek's `MlpProjector` ("mlp_gelu"): Linear, then (activation, Linear) `depth - 1` times."""

    def __init__(self, in_features: int, out_features: int, depth: int, hidden_act: str):
        super().__init__()
        layers = [nn.Linear(in_features, out_features)]
        for _ in range(1, depth):
            layers += [ACT2FN[hidden_act], nn.Linear(out_features, out_features)]
        self.layers = nn.Sequential(*layers)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden_states)


class JanusProImageHead(nn.Module):
    """Predicts the next image token from an LLM hidden state (DeepSeek's `vision_head`)."""

    def __init__(self, config: JanusProConfig):
        super().__init__()
        self.output_mlp_projector = nn.Linear(config.text_config.hidden_size, config.image_head_hidden_size)
        self.vision_activation = ACT2FN[config.projector_hidden_act]
        self.vision_head = nn.Linear(config.image_head_hidden_size, config.vq_config.num_vq_embeddings)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.vision_head(self.vision_activation(self.output_mlp_projector(hidden_states)))


class JanusProPreTrainedModel(PreTrainedModel):
    config: JanusProConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "SiglipEncoderLayer", "VQModel"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # DeepSeek's checkpoints hold tensors Janus-Pro never uses (SigLIP's pooling head, the VQ's usage counter).
    _keys_to_ignore_on_load_unexpected = list(DEEPSEEK_UNUSED_KEYS)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict: bool = True, **kwargs):
        r"""
        `PreTrainedModel.from_pretrained` (our format or DeepSeek's), refusing by name tensors the checkpoint lacks
        (they would stay randomly initialised) or has that the model has no place for.

        strict (`bool`, *optional*, defaults to `True`):
            Pass `False` to load an incomplete checkpoint anyway, as transformers does (a load report, missing
            tensors initialised). `output_loading_info=True` also hands the lists to the caller instead of raising.
            A state dict given in memory with no checkpoint (`from_pretrained(None, config=..., state_dict=...)`) is
            the caller's to complete.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        from_deepseek = (
            pretrained_model_name_or_path is not None
            and kwargs.get("state_dict") is None
            and checkpoint_format(pretrained_model_name_or_path, **hub_kwargs_from(kwargs)) == "deepseek"
        )
        if kwargs.get("state_dict") is None:
            error_class = DeepSeekCheckpointError if from_deepseek else CheckpointError
            check_local_shard_index(pretrained_model_name_or_path, kwargs.get("subfolder", ""), error_class)
        # DeepSeek's weights are renamed and split by transformers' loader (`deepseek_format.deepseek_weight_conversion`)
        with deepseek_weight_conversion(cls.config_class.model_type) if from_deepseek else contextlib.nullcontext():
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        use_mapped_generation_config(model)
        if from_deepseek:  # SigLIP's q/k/v come out of the split as views of DeepSeek's fused qkv tensor
            separate_shared_storage(model)
        if strict and not output_loading_info and pretrained_model_name_or_path is not None:
            check_loaded_weights(model, pretrained_model_name_or_path, loading_info, **hub_kwargs_from(kwargs))
        return (model, loading_info) if output_loading_info else model

    @staticmethod
    def _load_pretrained_model(model, state_dict, checkpoint_files, load_config, expected_keys=None):
        """`PreTrainedModel._load_pretrained_model`, with every weight file checked first (`read_weight_files`)."""
        if state_dict is None and checkpoint_files:
            state_dict = read_weight_files(checkpoint_files, load_config)
        return PreTrainedModel._load_pretrained_model(model, state_dict, checkpoint_files, load_config, expected_keys)

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        """`PreTrainedModel._finalize_model_loading`, with tensors that do not fit the model refused by name."""
        check_mismatched_weights(model, load_config, loading_info)
        return PreTrainedModel._finalize_model_loading(model, load_config, loading_info)

    @classmethod
    def is_custom_code(cls) -> bool:
        """
        False: unlike arbitrary custom code, `_init_weights` here initialises through `transformers.initialization`
        (which marks what it set), so initialisation runs as for an in-library composite model: SigLIP's and Llama's
        own `_init_weights` apply to their towers unchanged (for custom code, transformers skips modules whose own
        parameters are all set, e.g. SigLIP's attention init, so a meta-device init would differ from a fresh model).
        """
        return False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Embedding) and module is getattr(self, "gen_embed", None):
            init.normal_(module.weight, std=1.0)


class JanusProModel(JanusProPreTrainedModel):
    """
    Janus-Pro without the text head: understanding encoder and adaptor, language model, and the generation path
    (image-token embedding, generation adaptor, image head, VQ tokenizer).
    """

    def __init__(self, config: JanusProConfig):
        super().__init__(config)
        text_hidden = config.text_config.hidden_size
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.aligner = JanusProMlpProjector(
            config.vision_config.hidden_size, text_hidden, config.aligner_depth, config.projector_hidden_act
        )
        self.vq_model = VQModel(**config.vq_config.to_diffusers_kwargs())
        self.gen_embed = nn.Embedding(config.vq_config.num_vq_embeddings, config.vq_config.vq_embed_dim)
        self.gen_aligner = JanusProMlpProjector(
            config.vq_config.vq_embed_dim, text_hidden, config.gen_aligner_depth, config.projector_hidden_act
        )
        self.gen_head = JanusProImageHead(config)
        self.language_model = AutoModel.from_config(config.text_config)

        # Initialize weights and apply final processing
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """
        Understanding features: SigLIP (all layers and the final LayerNorm, no pooling head) then the adaptor.
        `pixel_values` is `[num_images, 3, image_size, image_size]`; `pooler_output` is `[num_images, tokens, hidden]`.
        With `config.understanding_encoder == "vq"` (the shared-encoder ablation) they are the image's VQ codes
        through the generation embedding and adaptor instead (`last_hidden_state`: the code embeddings).
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, self.config.image_size, self.config.image_size):
            raise ValueError(
                f"`pixel_values` must be [num_images, 3, {self.config.image_size}, {self.config.image_size}], got "
                f"{list(pixel_values.shape)}. Prepare images with JanusProProcessor / JanusProImageProcessor."
            )
        if self.config.understanding_encoder == "vq":
            # The processor's [-1, 1] scaling is the VQ tokenizer's. The code search has no gradient to pass back, and
            # runs outside autocast so the codes are the ones generation is trained on (float32 VQ, as trained).
            with torch.no_grad(), torch.autocast(pixel_values.device.type, enabled=False):
                image_tokens = self.encode_image_tokens(pixel_values).flatten(1)
            code_embeddings = self.gen_embed(image_tokens)
            return BaseModelOutputWithPooling(
                last_hidden_state=code_embeddings, pooler_output=self.gen_aligner(code_embeddings)
            )
        pixel_values = pixel_values.to(self.vision_model.dtype)
        image_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        image_outputs.pooler_output = self.aligner(image_outputs.last_hidden_state)
        return image_outputs

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Boolean mask `[batch, seq]` of the `<image_placeholder>` positions that receive image features. With
        `image_features` `[num_images, tokens, hidden]`, also checks (compile-safely) that they fill the positions.
        """
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        if image_features is not None:
            num_images, tokens_per_image = image_features.shape[0], image_features.shape[1]
            torch_compilable_check(
                mask.sum() == num_images * tokens_per_image,
                lambda: (
                    f"The text holds {int(mask.sum())} `<image_placeholder>` tokens but {num_images} image(s) give "
                    f"{num_images * tokens_per_image} features ({tokens_per_image} per image). Build inputs with "
                    "JanusProProcessor, which expands each placeholder to one image's tokens, and pass exactly one "
                    "image per placeholder."
                ),
            )
        return mask

    def get_image_token_embeddings(self, image_token_ids: torch.LongTensor) -> torch.Tensor:
        """LLM input embeddings of image tokens (generation path): `gen_aligner(gen_embed(ids))`."""
        self._check_token_range(image_token_ids, self.config.vq_config.num_vq_embeddings, "image token ids")
        return self.gen_aligner(self.gen_embed(image_token_ids))

    def get_image_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Image-head logits over the VQ codebook for LLM hidden states `[..., hidden]`."""
        return self.gen_head(hidden_states)

    def encode_image_tokens(self, pixel_values: torch.FloatTensor) -> torch.LongTensor:
        """
        VQ-encode generation-preprocessed images (`[batch, 3, H, W]` in [-1, 1], see
        `JanusProImageProcessor.preprocess_for_generation`) into image tokens `[batch, grid, grid]`.
        """
        latents = self.vq_model.encode(pixel_values.to(self.vq_model.dtype)).latents
        _, _, (_, _, codes) = self.vq_model.quantize(latents)
        return codes.view(latents.shape[0], latents.shape[2], latents.shape[3])

    def get_image_token_latents(self, image_tokens: torch.LongTensor) -> torch.Tensor:
        """Codebook vectors of image tokens `[batch, grid * grid]` (or `[batch, grid, grid]`) as `[batch, C, grid, grid]`."""
        batch_size = image_tokens.shape[0]
        image_tokens = image_tokens.reshape(batch_size, -1)
        grid = int(image_tokens.shape[1] ** 0.5)
        if grid * grid != image_tokens.shape[1]:
            raise ValueError(f"Image tokens must form a square grid, got {image_tokens.shape[1]} tokens per image.")
        self._check_token_range(image_tokens, self.config.vq_config.num_vq_embeddings, "image token ids")
        shape = (batch_size, grid, grid, self.config.vq_config.vq_embed_dim)
        return self.vq_model.quantize.get_codebook_entry(image_tokens, shape)

    def decode_image_tokens(self, image_tokens: torch.LongTensor) -> torch.FloatTensor:
        """VQ-decode image tokens `[batch, grid * grid]` into images `[batch, 3, H, W]` in about [-1, 1]."""
        latents = self.get_image_token_latents(image_tokens)
        return self.vq_model.decode(latents, force_not_quantize=True).sample

    @staticmethod
    def _check_token_range(token_ids: torch.Tensor, vocab_size: int, what: str):
        """Refuse ids outside `[0, vocab_size)` (an embedding lookup would fail obscurely); a compile-safe check."""
        if token_ids.numel():
            torch_compilable_check(
                ((token_ids >= 0) & (token_ids < vocab_size)).all(),
                lambda: (
                    f"Out-of-range {what}: found values in [{int(token_ids.min())}, {int(token_ids.max())}], but the "
                    f"vocabulary has {vocab_size} entries. Tokenize with this checkpoint's tokenizer/processor."
                ),
            )

    def _embed_generation_positions(self, inputs_embeds: torch.Tensor, image_token_ids: torch.LongTensor) -> torch.Tensor:
        """Replace the embeddings where `image_token_ids != -100` by the image tokens' generation embeddings."""
        if image_token_ids.shape != inputs_embeds.shape[:2]:
            raise ValueError(
                f"`image_token_ids` must have the shape of `input_ids` {list(inputs_embeds.shape[:2])} (VQ codes at "
                f"the positions of a generated image, -100 elsewhere), got {list(image_token_ids.shape)}."
            )
        positions = image_token_ids != -100
        # Run even when no position holds an image token, so the generation adaptor always joins the autograd graph
        # (distributed data parallel expects every trainable parameter to receive a gradient, zero or not).
        embeddings = self.get_image_token_embeddings(image_token_ids[positions])
        return inputs_embeds.masked_scatter(positions.unsqueeze(-1), embeddings.to(inputs_embeds.dtype))

    def _check_context_length(self, seq_length: int, cache: Cache | None = None):
        """
        Refuse sequences longer than the language model's context, from shapes only (no host sync), for the eager
        entry points (`generate_images`); skipped while compiling, for caches that count positions on the device
        (static caches) and when RoPE scaling (linear, dynamic, YaRN, ...) extends the context past
        `max_position_embeddings`.
        """
        rope_parameters = getattr(self.config.text_config, "rope_parameters", None) or {}
        if is_tracing() or rope_parameters.get("rope_type", "default") != "default":
            return
        past = cache.get_seq_length() if cache is not None else 0
        if isinstance(past, torch.Tensor):
            return
        max_positions = self.config.text_config.max_position_embeddings
        if past + seq_length > max_positions:
            raise ValueError(
                f"The sequence is {past + seq_length} tokens long ({past} cached + {seq_length} new), more than the "
                f"model's context of {max_positions} tokens (`text_config.max_position_embeddings`). Shorten the "
                "prompt, use fewer images (each takes `num_image_tokens` positions) or lower `max_new_tokens`."
            )

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        image_token_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> JanusProModelOutputWithPast:
        r"""
        `<image_placeholder>` positions take the image features of `pixel_values` (or `mm_encoder_outputs`); without
        images they embed as the placeholder token (as when transformers' assisted decoding runs the text alone).
        `image_token_ids` `[batch, seq]` (training on text-to-image samples) holds VQ codes at the positions of a
        generated image and -100 elsewhere: those positions embed as `gen_aligner(gen_embed(code))`.
        `generate` refuses placeholders without images; the processor matches images to placeholders. As for Llama,
        the forward runs past `max_position_embeddings` (RoPE extrapolates, or a RoPE scaling extends the context);
        `generate` and `generate_images` refuse a prompt that cannot fit before doing any work.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("Pass either `pixel_values` or precomputed `mm_encoder_outputs`, not both.")
        if inputs_embeds is None:
            self._check_token_range(input_ids, self.config.text_config.vocab_size, "token ids")
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is None and pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values, return_dict=True)
        if image_outputs is not None:
            image_features = image_outputs.pooler_output
            placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            image_features = image_features.reshape(-1, inputs_embeds.shape[-1]).to(
                inputs_embeds.device, inputs_embeds.dtype
            )
            inputs_embeds = inputs_embeds.masked_scatter(placeholder_mask.unsqueeze(-1), image_features)
        if image_token_ids is not None:
            inputs_embeds = self._embed_generation_positions(inputs_embeds, image_token_ids)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return JanusProModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
        )


class JanusProForConditionalGeneration(JanusProImageGenerationMixin, JanusProPreTrainedModel, GenerationMixin):
    """
    Janus-Pro with its text head: answers about images through `generate` (GenerationMixin), and exposes the
    generation path (image-token embeddings, image-head logits, VQ encode/decode) for text-to-image decoding.
    """

    _tp_plan = {"lm_head": "colwise_gather_output"}
    output_modalities = ("text", "image")
    # As `register_for_auto_class`: `save_pretrained` copies this code next to the weights and writes `auto_map`.
    _auto_class = "AutoModelForImageTextToText"

    def __init__(self, config: JanusProConfig):
        super().__init__(config)
        self.model = JanusProModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)

        # Initialize weights and apply final processing
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, **kwargs)

    def get_image_token_embeddings(self, image_token_ids: torch.LongTensor) -> torch.Tensor:
        return self.model.get_image_token_embeddings(image_token_ids)

    def get_image_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_logits(hidden_states)

    def encode_image_tokens(self, pixel_values: torch.FloatTensor) -> torch.LongTensor:
        return self.model.encode_image_tokens(pixel_values)

    def decode_image_tokens(self, image_tokens: torch.LongTensor) -> torch.FloatTensor:
        return self.model.decode_image_tokens(image_tokens)

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """
        `GenerationMixin.generate`, refusing up front a prompt whose `<image_placeholder>` tokens come without images
        (the forward itself embeds them as text, as transformers' assisted decoding needs for its assistant).
        """
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if torch.is_tensor(input_ids) and (input_ids.ndim != 2 or input_ids.shape[1] == 0):
            raise ValueError(
                f"`input_ids` must be a [batch, length] tensor holding at least one token (BOS), got shape "
                f"{list(input_ids.shape)}; build prompts with the processor."
            )
        text_mode = kwargs.get("generation_mode", "text") == "text"
        # Images come as pixels or encoder outputs, or already sit in a cache that the prompt continues.
        has_images = any(kwargs.get(name) is not None for name in ("pixel_values", "mm_encoder_outputs", "inputs_embeds"))
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        continues_cache = cache is not None and cache.get_seq_length() > 0
        is_assistant = getattr(generation_config, "is_assistant", False)
        if text_mode and not (has_images or continues_cache or is_assistant) and torch.is_tensor(input_ids) and not input_ids.is_floating_point():
            num_placeholders = int((input_ids == self.config.image_token_id).sum())
            if num_placeholders:
                raise ValueError(
                    f"The text holds {num_placeholders} `<image_placeholder>` tokens but no `pixel_values` were given. "
                    "Pass the images to the processor together with the text."
                )
        return super().generate(inputs=inputs, generation_config=generation_config, **kwargs)

    def _validate_generated_length(self, generation_config, input_ids_length, has_default_max_length):
        """Also refuse, before any work, a prompt plus `max_new_tokens` longer than the language model's context."""
        super()._validate_generated_length(generation_config, input_ids_length, has_default_max_length)
        rope_parameters = getattr(self.config.text_config, "rope_parameters", None) or {}
        max_positions = self.config.text_config.max_position_embeddings
        if rope_parameters.get("rope_type", "default") == "default" and generation_config.max_length > max_positions:
            raise ValueError(
                f"The prompt is {input_ids_length} tokens long and generation may reach {generation_config.max_length}, "
                f"more than the model's context of {max_positions} tokens (`text_config.max_position_embeddings`). "
                "Shorten the prompt, use fewer images (each takes `num_image_tokens` positions) or lower "
                "`max_new_tokens`."
            )

    def save_pretrained(self, save_directory, *args, training_summary=None, push_to_hub: bool = False, **kwargs):
        """
        `PreTrainedModel.save_pretrained`, plus the model card (`training_summary`: a `model_card.TrainingSummary` or
        dict, recorded in it) and `auto_map` that make the directory load with `trust_remote_code=True` where this
        package is not installed (see `packaging.prepare_model_directory`). `push_to_hub=True` then uploads through
        `push_to_hub` (`repo_id` defaults to the folder's name), which keeps the card.
        """
        hub_kwargs = {
            name: kwargs.pop(name)
            for name in ("repo_id", "commit_message", "commit_description", "private", "revision", "create_pr")
            if name in kwargs
        }
        prepare_model_directory(self, save_directory, training_summary=training_summary)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(str(save_directory))))
            token = kwargs.get("token")
            self.push_to_hub(repo_id, token=token, training_summary=training_summary, **hub_kwargs)
        return result

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
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
        training_summary=None,
    ):
        """
        Upload the model as `PreTrainedModel.push_to_hub` does, keeping our card (transformers' writes its generic
        template over it): `base_model` (the Hub id the weights came from), tags (`model_tags` and `tags` added),
        how to load it with and without this package, and `training_summary` if given. A repository whose README.md
        someone wrote keeps it (see `model_card.card_to_upload`). With PEFT adapters loaded through transformers'
        integration (`add_adapter`), the adapter alone is uploaded, with an adapter's card.
        """
        tags = list(dict.fromkeys([*(self.model_tags or []), *([tags] if isinstance(tags, str) else tags or [])]))
        kind = "adapter" if getattr(self, "_hf_peft_config_loaded", False) else "model"
        return push_folder_with_card(
            repo_id,
            lambda directory: self.save_pretrained(directory, max_shard_size=max_shard_size),
            lambda full_id: model_card_for(self, repo_id=full_id, training_summary=training_summary, tags=tags),
            commit_message=commit_message or f"Upload {'adapter' if kind == 'adapter' else 'model'}",
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        image_token_ids: torch.LongTensor | None = None,
        image_labels: torch.LongTensor | None = None,
        num_image_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> JanusProCausalLMOutputWithPast:
        r"""
        Training takes both kinds of sample in one batch (see `docs/training.md`):

        - `labels` `[batch, seq]`: text targets aligned with `input_ids` (-100 where not supervised); position `t` is
          scored through `lm_head` against `labels[t + 1]`, as for any causal LM.
        - `image_token_ids` `[batch, seq]`: VQ codes at the positions of a generated image, -100 elsewhere (those
          positions hold any text id, e.g. the pad id); they embed through the generation adaptor.
        - `image_labels` `[batch, seq]`: image-token targets aligned the same way; position `t` is scored through the
          image head against `image_labels[t + 1]` (`<begin_of_image>` predicts the first code).
        - `num_items_in_batch` / `num_image_items_in_batch`: the number of text / image targets of the whole
          optimizer step (all accumulation steps and processes), so each loss is its sum over the step divided by
          that count; by default the count of this batch. A kind without targets gives 0, never `nan`.

        `loss = text_loss + image_loss`. Packed rows (several samples per row, `position_ids` restarting at 0 per
        sample, no `attention_mask`) keep samples apart, because a loss computation runs without a cache.

        Example:

        ```python
        >>> from transformers import AutoProcessor
        >>> from transformers_janus import JanusProForConditionalGeneration
        >>> model = JanusProForConditionalGeneration.from_pretrained("deepseek-ai/Janus-Pro-1B")
        >>> processor = AutoProcessor.from_pretrained("deepseek-ai/Janus-Pro-1B")
        >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
        >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        >>> inputs = processor(text=prompt, images=[image], return_tensors="pt")
        >>> output = model.generate(**inputs, max_new_tokens=32)
        ```"""
        training_losses = labels is not None or image_labels is not None
        if training_losses and use_cache is None:
            # Without a cache, transformers' masks keep packed samples (restarting `position_ids`) apart.
            use_cache = False
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            image_token_ids=image_token_ids,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = text_loss = image_loss = image_logits = None
        if training_losses:
            text_loss = logits.new_zeros((), dtype=torch.float32)
            if labels is not None:
                text_loss = self.loss_function(
                    logits=logits,
                    labels=labels,
                    vocab_size=self.config.text_config.vocab_size,
                    num_items_in_batch=_target_count(labels, num_items_in_batch),
                    **kwargs,
                )
            image_loss = logits.new_zeros((), dtype=torch.float32)
            if image_labels is not None:
                image_loss, image_logits = self._image_loss(
                    outputs.last_hidden_state, image_labels, num_image_items_in_batch
                )
            loss = text_loss + image_loss

        return JanusProCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
            text_loss=text_loss,
            image_loss=image_loss,
            image_logits=image_logits,
        )

    def _image_loss(
        self,
        hidden_states: torch.Tensor,
        image_labels: torch.LongTensor,
        num_image_items_in_batch: int | torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-head cross-entropy summed over the shifted `image_labels` targets, divided by their count."""
        if image_labels.shape != hidden_states.shape[:2]:
            raise ValueError(
                f"`image_labels` must have the shape of `input_ids` {list(hidden_states.shape[:2])} (image-token "
                f"targets aligned with the input, -100 elsewhere), got {list(image_labels.shape)}."
            )
        targets = image_labels[:, 1:].to(hidden_states.device)
        positions = targets != -100
        targets = targets[positions]
        JanusProModel._check_token_range(targets, self.config.vq_config.num_vq_embeddings, "image labels")
        # The head runs only where a target follows (it is as wide as the codebook), and also when none does, so it
        # always joins the autograd graph (a zero gradient for distributed data parallel).
        image_logits = self.get_image_logits(hidden_states[:, :-1][positions])
        loss = nn.functional.cross_entropy(image_logits.float(), targets, reduction="sum")
        return loss / _target_count(image_labels, num_image_items_in_batch).to(loss.device), image_logits


def _target_count(labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    """The loss denominator: the caller's count of the whole step's targets, else this batch's; at least 1."""
    if num_items_in_batch is None:
        num_items_in_batch = (labels[:, 1:] != -100).sum()
    return torch.as_tensor(num_items_in_batch, device=labels.device).clamp(min=1)


__all__ = ["JanusProPreTrainedModel", "JanusProModel", "JanusProForConditionalGeneration"]
