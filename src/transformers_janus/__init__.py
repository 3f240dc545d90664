"""Janus-Pro on the Hugging Face stack. Importing this package registers its classes with the Auto API."""

from .configuration_janus_pro import JanusProConfig, JanusProVQConfig
from .image_processing_janus_pro import JanusProImageProcessor
from .modeling_janus_pro import JanusProForConditionalGeneration, JanusProModel, JanusProPreTrainedModel
from .pipeline_janus_pro import JanusProImagePipeline
from .processing_janus_pro import JanusProProcessor
from .registration import register_auto_classes


register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "JanusProConfig",
    "JanusProVQConfig",
    "JanusProPreTrainedModel",
    "JanusProModel",
    "JanusProForConditionalGeneration",
    "JanusProImageProcessor",
    "JanusProProcessor",
    "JanusProImagePipeline",
    "register_auto_classes",
]
