"""PyTorch Janus-Pro model: SigLIP + Llama + diffusers' VQModel, joined by Janus-Pro's adaptors and image head."""

import json
from dataclasses import dataclass

import torch
from diffusers import VQModel
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, cached_file, logging
from transformers.utils.generic import can_return_tuple

from .configuration_janus_pro import JanusProConfig
from .image_generation import JanusProImageGenerationMixin
from .packaging import prepare_model_directory
from .deepseek_format import DeepSeekCheckpointError, is_deepseek_config, load_deepseek_state_dict
from .utils import check_state_dict_matches, expected_shapes, hub_kwargs_from


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
    Outputs of [`JanusProForConditionalGeneration`]: text logits `[batch, seq, vocab]`, optional loss, cache and
    `image_outputs` as in [`JanusProModelOutputWithPast`].
    """


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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, which also reads checkpoints exactly as DeepSeek published them
        (`model_type: "multi_modality"`): their config is mapped and their weights converted on the fly.
        """
        if pretrained_model_name_or_path is not None and kwargs.get("state_dict") is None:
            config_file = cached_file(
                pretrained_model_name_or_path,
                "config.json",
                _raise_exceptions_for_missing_entries=False,
                **hub_kwargs_from(kwargs),
            )
            if config_file is not None:
                with open(config_file, encoding="utf-8") as handle:
                    if is_deepseek_config(json.load(handle)):
                        return cls._from_deepseek_checkpoint(pretrained_model_name_or_path, *model_args, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def _from_deepseek_checkpoint(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        hub_kwargs = hub_kwargs_from(kwargs)
        for key in hub_kwargs:
            kwargs.pop(key)
        config = kwargs.pop("config", None)
        if not isinstance(config, JanusProConfig):
            # Config attributes override the config, as in `PreTrainedModel.from_pretrained`; the rest (and `dtype`,
            # which configs also carry) are loading arguments.
            defaults = JanusProConfig()
            model_kwargs = {
                key: kwargs.pop(key) for key in list(kwargs) if key in ("dtype", "torch_dtype") or not hasattr(defaults, key)
            }
            config, unused = JanusProConfig.from_pretrained(
                pretrained_model_name_or_path, return_unused_kwargs=True, **hub_kwargs, **kwargs
            )
            kwargs = {**model_kwargs, **unused}
        state_dict = load_deepseek_state_dict(pretrained_model_name_or_path, **hub_kwargs)
        expected = expected_shapes(cls, config)
        if not any(key.startswith("model.") for key in expected):  # the headless base model
            state_dict = {key[len("model.") :]: value for key, value in state_dict.items() if key.startswith("model.")}
        check_state_dict_matches(state_dict, expected, str(pretrained_model_name_or_path), DeepSeekCheckpointError)
        return super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Embedding) and module is getattr(self, "gen_embed", None):
            nn.init.normal_(module.weight, std=1.0)


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
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, self.config.image_size, self.config.image_size):
            raise ValueError(
                f"`pixel_values` must be [num_images, 3, {self.config.image_size}, {self.config.image_size}], got "
                f"{list(pixel_values.shape)}. Prepare images with JanusProProcessor / JanusProImageProcessor."
            )
        pixel_values = pixel_values.to(self.vision_model.dtype)
        image_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        image_outputs.pooler_output = self.aligner(image_outputs.last_hidden_state)
        return image_outputs

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Boolean mask `[batch, seq]` of the `<image_placeholder>` positions that receive image features."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            return (inputs_embeds == image_embedding).all(-1)
        return input_ids == self.config.image_token_id

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
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= vocab_size):
            raise ValueError(
                f"Out-of-range {what}: found values in [{int(token_ids.min())}, {int(token_ids.max())}], but the "
                f"vocabulary has {vocab_size} entries. Tokenize with this checkpoint's tokenizer/processor."
            )

    def _check_context_length(self, seq_length: int, cache: Cache | None):
        past = cache.get_seq_length() if cache is not None else 0
        max_positions = self.config.text_config.max_position_embeddings
        if past + seq_length > max_positions:
            raise ValueError(
                f"The sequence is {past + seq_length} tokens long ({past} cached + {seq_length} new), more than the "
                f"model's context of {max_positions} tokens (`text_config.max_position_embeddings`). Shorten the "
                "prompt, use fewer images (each takes `num_image_tokens` positions) or lower `max_new_tokens`."
            )

    @can_return_tuple
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
        **kwargs: Unpack[TransformersKwargs],
    ) -> JanusProModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        seq_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        self._check_context_length(seq_length, cache)

        if inputs_embeds is None:
            self._check_token_range(input_ids, self.config.text_config.vocab_size, "token ids")
            inputs_embeds = self.get_input_embeddings()(input_ids)

        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("Pass either `pixel_values` or precomputed `mm_encoder_outputs`, not both.")
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is None and pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values, return_dict=True)
        placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
        if image_outputs is not None:
            image_features = image_outputs.pooler_output
            n_placeholders = int(placeholder_mask.sum())
            if n_placeholders != image_features.shape[0] * image_features.shape[1]:
                raise ValueError(
                    f"The text holds {n_placeholders} `<image_placeholder>` tokens but {image_features.shape[0]} "
                    f"image(s) give {image_features.shape[0] * image_features.shape[1]} features "
                    f"({image_features.shape[1]} per image). Build inputs with JanusProProcessor, which expands each "
                    "placeholder to one image's tokens, and pass exactly one image per placeholder."
                )
            image_features = image_features.reshape(-1, inputs_embeds.shape[-1]).to(
                inputs_embeds.device, inputs_embeds.dtype
            )
            inputs_embeds = inputs_embeds.masked_scatter(placeholder_mask.unsqueeze(-1), image_features)
        elif input_ids is not None and (cache is None or cache.get_seq_length() == 0) and placeholder_mask.any():
            raise ValueError(
                f"The text holds {int(placeholder_mask.sum())} `<image_placeholder>` tokens but no `pixel_values` "
                "were given. Pass the images to the processor together with the text."
            )

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

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        `PreTrainedModel.save_pretrained`, plus the model card and `auto_map` that make the directory load with
        `trust_remote_code=True` where this package is not installed (see `packaging.prepare_model_directory`).
        """
        prepare_model_directory(self, save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @can_return_tuple
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
        **kwargs: Unpack[TransformersKwargs],
    ) -> JanusProCausalLMOutputWithPast:
        r"""
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
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )

        return JanusProCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
        )


__all__ = ["JanusProPreTrainedModel", "JanusProModel", "JanusProForConditionalGeneration"]
