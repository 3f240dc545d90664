"""Janus-Pro model configuration."""

import os

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .utils import CheckpointError, hub_kwargs_from, read_config_dict

# Values of `JanusProConfig.understanding_encoder`: Janus-Pro's decoupled SigLIP, or the shared VQ tokenizer.
UNDERSTANDING_ENCODERS = ("siglip", "vq")


@strict
class JanusProVQConfig(PreTrainedConfig):
    r"""
    Configuration of the generation encoder/decoder (DeepSeek's "VQ-16"), stored as the keyword arguments of
    `diffusers.VQModel`, which is the module we build from it.

    Args:
        in_channels (`int`, *optional*, defaults to 3): Channels of the input image.
        out_channels (`int`, *optional*, defaults to 3): Channels of the decoded image.
        block_out_channels (`list[int]`, *optional*, defaults to `[128, 128, 256, 256, 512]`):
            Channels of each resolution level (`ch * ch_mult` in DeepSeek's config). The VQ downsamples by
            `2 ** (len(block_out_channels) - 1)` (16 for Janus-Pro).
        layers_per_block (`int`, *optional*, defaults to 2): Residual blocks per encoder level (decoder levels have one more).
        act_fn (`str`, *optional*, defaults to `"silu"`): Activation of the residual blocks.
        latent_channels (`int`, *optional*, defaults to 256): Channels of the encoder output (`z_channels`).
        num_vq_embeddings (`int`, *optional*, defaults to 16384): Codebook size, i.e. the image-token vocabulary.
        vq_embed_dim (`int`, *optional*, defaults to 8): Dimension of a codebook vector.
        norm_num_groups (`int`, *optional*, defaults to 32): Groups of every GroupNorm.
        initializer_range (`float`, *optional*, defaults to 0.02): Std of the random initialisation.

    Example:

    ```python
    >>> from transformers_janus import JanusProVQConfig
    >>> from diffusers import VQModel
    >>> vq = VQModel(**JanusProVQConfig().to_diffusers_kwargs())
    ```"""

    model_type = "janus_pro_vq"
    base_config_key = "vq_config"

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: list[int] | tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 2
    act_fn: str = "silu"
    latent_channels: int = 256
    num_vq_embeddings: int = 16384
    vq_embed_dim: int = 8
    norm_num_groups: int = 32
    initializer_range: float = 0.02

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def to_diffusers_kwargs(self) -> dict:
        """The keyword arguments of `diffusers.VQModel` that build the reference VQ-16 architecture (SPEC §1)."""
        levels = len(self.block_out_channels)
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": ("DownEncoderBlock2D",) * (levels - 1) + ("AttnDownEncoderBlock2D",),
            "up_block_types": ("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * (levels - 1),
            "block_out_channels": tuple(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "act_fn": self.act_fn,
            "latent_channels": self.latent_channels,
            "num_vq_embeddings": self.num_vq_embeddings,
            "norm_num_groups": self.norm_num_groups,
            "vq_embed_dim": self.vq_embed_dim,
        }

    def validate_architecture(self):
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"`block_out_channels` entry {channels} is not divisible by `norm_num_groups` "
                    f"({self.norm_num_groups}); GroupNorm needs whole groups."
                )


@strict
class JanusProConfig(PreTrainedConfig):
    r"""
    Configuration of a Janus-Pro model: a SigLIP understanding encoder, a Llama language model and a VQ image
    tokenizer, joined by Janus-Pro's own adaptors and image head.

    Args:
        vision_config (`SiglipVisionConfig` or `dict`, *optional*): The understanding encoder (SigLIP-L/16 @ 384).
        text_config (`LlamaConfig` or `dict`, *optional*): The language model (DeepSeek-LLM, Llama architecture).
        vq_config (`JanusProVQConfig` or `dict`, *optional*): The generation encoder/decoder (`diffusers.VQModel`).
        aligner_depth (`int`, *optional*, defaults to 2):
            Linear layers of the understanding adaptor (SigLIP width -> LLM width, GELU between layers).
        gen_aligner_depth (`int`, *optional*, defaults to 2):
            Linear layers of the generation adaptor (codebook dim -> LLM width, GELU between layers).
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`): Activation of both adaptors and the image head.
        image_head_hidden_size (`int`, *optional*):
            Width of the image head's hidden layer; defaults to the LLM width.
        num_image_tokens (`int`, *optional*):
            Tokens per image, for understanding and generation alike; defaults to `(image_size // patch_size) ** 2`
            of the vision config (576 for Janus-Pro).
        image_token_id (`int`, *optional*, defaults to 100581): Id of `<image_placeholder>`.
        boi_token_id (`int`, *optional*, defaults to 100016): Id of `<begin_of_image>`.
        eoi_token_id (`int`, *optional*, defaults to 100593): Id of `<end_of_image>`.
        pad_token_id (`int`, *optional*, defaults to 100015): Id of the pad token (also the CFG unconditional token).
            The four defaults are Janus-Pro-7B's ids in DeepSeek's 102400-token vocabulary; with a smaller
            vocabulary a default that does not fit becomes None (set the ids from your tokenizer). An id passed
            explicitly must lie inside the vocabulary.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`): Janus-Pro's `lm_head` is its own tensor.
        understanding_encoder (`str`, *optional*, defaults to `"siglip"`):
            What understanding reads. `"siglip"` is Janus-Pro's decoupled encoding: SigLIP and the understanding
            adaptor. `"vq"` is the single shared encoder the paper argues against (its ablation baseline, as in
            Chameleon): understanding reads the VQ tokenizer's codes of the image through the generation embedding and
            adaptor, exactly as generation reads its own tokens. SigLIP and the understanding adaptor are then kept
            (same checkpoint layout and stage freeze policies) but unused. Neither DeepSeek's nor transformers'
            built-in format can express `"vq"`.

    Special token ids differ between published checkpoints: read them from the tokenizer (loading DeepSeek's
    checkpoints does) rather than trusting the defaults, which are Janus-Pro-7B's.

    Example:

    ```python
    >>> from transformers_janus import JanusProConfig, JanusProForConditionalGeneration
    >>> config = JanusProConfig.janus_pro_1b()   # published shapes, no weights
    >>> config.text_config.hidden_size
    2048
    ```"""

    model_type = "janus_pro"
    # As `register_for_auto_class("AutoConfig")`: `save_pretrained` copies this code and writes `auto_map`.
    _auto_class = "AutoConfig"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="siglip_vision_model",
            init_kwargs={
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "image_size": 384,
                "patch_size": 16,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-6,
                "vision_use_head": False,
            },
        ),
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="llama",
            init_kwargs={
                "vocab_size": 102400,
                "hidden_size": 2048,
                "intermediate_size": 5632,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "num_key_value_heads": 16,
                "max_position_embeddings": 16384,
                "rms_norm_eps": 1e-6,
                "bos_token_id": 100000,
                "eos_token_id": 100001,
            },
        ),
        "vq_config": JanusProVQConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vq_config: dict | PreTrainedConfig | None = None
    aligner_depth: int = 2
    gen_aligner_depth: int = 2
    projector_hidden_act: str = "gelu"
    image_head_hidden_size: int | None = None
    num_image_tokens: int | None = None
    image_token_id: int | None = 100581
    boi_token_id: int | None = 100016
    eoi_token_id: int | None = 100593
    pad_token_id: int | None = 100015
    tie_word_embeddings: bool = False
    understanding_encoder: str = "siglip"

    def __post_init__(self, **kwargs):
        # A partial sub-config dict overrides Janus-Pro's defaults instead of the generic SigLIP/Llama ones
        # (which would, e.g., add SigLIP's unused pooling head or use a 32000-token vocabulary).
        for name in ("vision_config", "text_config"):
            value = getattr(self, name)
            if isinstance(value, dict):
                spec = self.sub_configs_defaults[name]
                setattr(self, name, {"model_type": spec.model_type, **spec.init_kwargs, **value})
        super().__post_init__(**kwargs)
        self._check_sizes()
        vocab_size = self.text_config.vocab_size
        for name in ("image_token_id", "boi_token_id", "eoi_token_id", "pad_token_id"):
            default = type(self).__dataclass_fields__[name].default
            if getattr(self, name) == default and not default < vocab_size:
                setattr(self, name, None)  # DeepSeek's id does not exist in this vocabulary
        if self.image_head_hidden_size is None:
            self.image_head_hidden_size = self.text_config.hidden_size
        if self.num_image_tokens is None:
            self.num_image_tokens = (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    def _check_sizes(self):
        """Sizes that must be positive, checked before anything divides by them (a zero would crash far away)."""
        sizes = {
            "text_config.vocab_size": self.text_config.vocab_size,
            "text_config.hidden_size": self.text_config.hidden_size,
            "text_config.intermediate_size": self.text_config.intermediate_size,
            "text_config.num_hidden_layers": self.text_config.num_hidden_layers,
            "text_config.num_attention_heads": self.text_config.num_attention_heads,
            "text_config.max_position_embeddings": self.text_config.max_position_embeddings,
            "vision_config.hidden_size": self.vision_config.hidden_size,
            "vision_config.intermediate_size": self.vision_config.intermediate_size,
            "vision_config.num_hidden_layers": self.vision_config.num_hidden_layers,
            "vision_config.num_attention_heads": self.vision_config.num_attention_heads,
            "vision_config.image_size": self.vision_config.image_size,
            "vision_config.patch_size": self.vision_config.patch_size,
            "vq_config.num_vq_embeddings": self.vq_config.num_vq_embeddings,
            "vq_config.vq_embed_dim": self.vq_config.vq_embed_dim,
            "vq_config.latent_channels": self.vq_config.latent_channels,
            "vq_config.layers_per_block": self.vq_config.layers_per_block,
            "vq_config.norm_num_groups": self.vq_config.norm_num_groups,
        }
        if self.image_head_hidden_size is not None:
            sizes["image_head_hidden_size"] = self.image_head_hidden_size
        for index, channels in enumerate(self.vq_config.block_out_channels):
            sizes[f"vq_config.block_out_channels[{index}]"] = channels
        bad = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
        if bad:
            raise ValueError(
                f"These Janus-Pro config sizes must be positive integers: {bad}. Fix them in config.json (or the "
                "config arguments); a checkpoint's config.json must describe the shapes of its weights."
            )

    @property
    def image_size(self) -> int:
        """Side of the square images the model understands and generates (384 for Janus-Pro)."""
        return self.vision_config.image_size

    @property
    def image_token_grid(self) -> int:
        """Side of the square grid of image tokens (24 for Janus-Pro)."""
        return self.vision_config.image_size // self.vq_config.downsample_factor

    def validate_architecture(self):
        grid = self.vision_config.image_size // self.vision_config.patch_size
        if self.num_image_tokens != grid * grid:
            raise ValueError(
                f"`num_image_tokens` ({self.num_image_tokens}) must equal the SigLIP patch grid squared "
                f"({grid}x{grid} = {grid * grid} for image_size {self.vision_config.image_size}, "
                f"patch_size {self.vision_config.patch_size})."
            )
        if self.image_token_grid**2 != self.num_image_tokens:
            raise ValueError(
                f"The VQ token grid ({self.image_token_grid}x{self.image_token_grid}: image_size "
                f"{self.vision_config.image_size} / VQ downsampling {self.vq_config.downsample_factor}) must hold "
                f"`num_image_tokens` ({self.num_image_tokens}) tokens."
            )
        if self.understanding_encoder not in UNDERSTANDING_ENCODERS:
            raise ValueError(
                f"`understanding_encoder` must be one of {list(UNDERSTANDING_ENCODERS)}, got "
                f"{self.understanding_encoder!r}: 'siglip' (Janus-Pro's decoupled encoders) or 'vq' (one shared VQ "
                "encoder, the paper's ablation baseline)."
            )
        for name in ("aligner_depth", "gen_aligner_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        for name in ("image_token_id", "boi_token_id", "eoi_token_id", "pad_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not 0 <= token_id < self.text_config.vocab_size:
                raise ValueError(
                    f"`{name}` ({token_id}) is outside the text vocabulary (size {self.text_config.vocab_size}); "
                    "read the special token ids from the checkpoint's tokenizer."
                )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """
        Also reads the config.json of another format whose config class is registered with `AutoConfig` to read as
        ours (it has a `to_janus_pro_dict` classmethod, e.g. DeepSeek's `multi_modality`, registered on import).
        A config.json that is not a JSON object, or describes another model, is one error naming the file.
        """
        # Named errors for a config.json that is not JSON or not an object (transformers' reader raises on neither).
        if not os.path.isfile(str(pretrained_model_name_or_path)):
            read_config_dict(pretrained_model_name_or_path, **hub_kwargs_from(kwargs))
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type in (None, cls.model_type):
            return config_dict, kwargs
        reader = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else None
        if hasattr(reader, "to_janus_pro_dict"):
            return reader.to_janus_pro_dict(config_dict, pretrained_model_name_or_path, **kwargs), kwargs
        source = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "", "config.json")
        if model_type == "janus":
            raise CheckpointError(
                f"{source} is a checkpoint in transformers' built-in `janus` format, which {cls.__name__} does not "
                "read. Load it with transformers' JanusForConditionalGeneration, or convert it to this package's "
                "format first: `janus-pro convert SRC DST --to ours` (in Python: `convert_janus_to_janus_pro`)."
            )
        raise CheckpointError(
            f"{source} describes a {model_type!r} model, not Janus-Pro. {cls.__name__} reads Janus-Pro checkpoints "
            "in this package's format (`model_type: janus_pro`) or as DeepSeek published them (`multi_modality`)."
        )

    @classmethod
    def janus_pro_1b(cls, **kwargs) -> "JanusProConfig":
        """Janus-Pro-1B shapes (SPEC §1): LLM 24 layers, hidden 2048, MLP 5632, 16 heads."""
        return cls(**kwargs)

    @classmethod
    def janus_pro_7b(cls, **kwargs) -> "JanusProConfig":
        """Janus-Pro-7B shapes (SPEC §1): LLM 30 layers, hidden 4096, MLP 11008, 32 heads."""
        text_config = {
            "model_type": "llama",
            "vocab_size": 102400,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 30,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 16384,
            "rms_norm_eps": 1e-6,
            "bos_token_id": 100000,
            "eos_token_id": 100001,
        }
        text_config.update(kwargs.pop("text_config", None) or {})
        return cls(text_config=text_config, **kwargs)


__all__ = ["JanusProConfig", "JanusProVQConfig"]
