"""Registration of the Janus-Pro classes with transformers' Auto API (`janus_pro`, and DeepSeek's `multi_modality`)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_janus_pro import JanusProConfig, JanusProVQConfig
from .deepseek_format import DeepSeekJanusConfig
from .modeling_janus_pro import JanusProForConditionalGeneration


def register_auto_classes() -> None:
    """Register every class once; safe to call again (re-registration of the same class is a no-op)."""
    AutoConfig.register(JanusProConfig.model_type, JanusProConfig, exist_ok=True)
    AutoConfig.register(JanusProVQConfig.model_type, JanusProVQConfig, exist_ok=True)
    # DeepSeek's published `multi_modality` config.json loads as a JanusProConfig, so every Auto class below applies.
    AutoConfig.register(DeepSeekJanusConfig.model_type, DeepSeekJanusConfig, exist_ok=True)
    # `AutoModel` gives the full model that can `generate`, as remote-code multimodal models do (InternVL,
    # MiniCPM-V, DeepSeek-VL2): evaluation harnesses load through `AutoModel` and then call `generate`.
    AutoModel.register(JanusProConfig, JanusProForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(JanusProConfig, JanusProForConditionalGeneration, exist_ok=True)
