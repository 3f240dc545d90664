"""Registration of the Janus-Pro classes with transformers' Auto API (`janus_pro`, and DeepSeek's `multi_modality`)."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    TokenizersBackend,
)

from .configuration_janus_pro import JanusProConfig, JanusProVQConfig
from .deepseek_format import DeepSeekJanusConfig, register_deepseek_weight_conversion
from .image_processing_janus_pro import JanusProImageProcessor, VLMImageProcessor
from .modeling_janus_pro import JanusProForConditionalGeneration
from .processing_janus_pro import JanusProProcessor, VLChatProcessor


def register_auto_classes() -> None:
    """Register every class once; safe to call again (re-registration of the same class is a no-op)."""
    AutoConfig.register(JanusProConfig.model_type, JanusProConfig, exist_ok=True)
    AutoConfig.register(JanusProVQConfig.model_type, JanusProVQConfig, exist_ok=True)
    # DeepSeek's published `multi_modality` config.json loads as a JanusProConfig, so every Auto class below applies.
    AutoConfig.register(DeepSeekJanusConfig.model_type, DeepSeekJanusConfig, exist_ok=True)
    # ... and its weights load through transformers' loader, renamed and split by a checkpoint conversion mapping.
    register_deepseek_weight_conversion(JanusProConfig.model_type)
    # `AutoModel` gives the full model that can `generate`, as remote-code multimodal models do (InternVL,
    # MiniCPM-V, DeepSeek-VL2): evaluation harnesses load through `AutoModel` and then call `generate`.
    AutoModel.register(JanusProConfig, JanusProForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(JanusProConfig, JanusProForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(JanusProConfig, JanusProProcessor, exist_ok=True)
    # DeepSeek-LLM's tokenizer is a byte-level BPE `tokenizer.json`, read as it is (no Llama/SentencePiece rebuild).
    AutoTokenizer.register(JanusProConfig, tokenizer_class=TokenizersBackend, exist_ok=True)
    AutoTokenizer.register(DeepSeekJanusConfig, tokenizer_class=TokenizersBackend, exist_ok=True)
    AutoImageProcessor.register(JanusProConfig, image_processor_classes={"pil": JanusProImageProcessor}, exist_ok=True)
    # DeepSeek's processor files name `VLChatProcessor` / `VLMImageProcessor`, and the Auto classes look such names up
    # among registered classes (without consulting config.json): register loader aliases under those names.
    AutoProcessor.register(DeepSeekJanusConfig, VLChatProcessor, exist_ok=True)
    AutoImageProcessor.register(DeepSeekJanusConfig, image_processor_classes={"pil": VLMImageProcessor}, exist_ok=True)
