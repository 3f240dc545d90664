"""
Registration of the Janus-Pro classes with transformers' Auto API (`janus_pro`, and DeepSeek's `multi_modality`).

Registering needs transformers' Auto modules, and importing those costs seconds (they import torch), so
`import transformers_janus` does not register at once: it installs [`AutoRegistrationHook`], which registers our
classes with each Auto mapping as soon as transformers' module holding it has been imported, by whoever imports it
first (`from transformers import AutoModel` does). A module already imported is registered with straight away.
transformers itself serves module imports through a `sys.meta_path` finder in the same way (its legacy module
aliases).

The model class is the one heavy part (it imports diffusers): the model mappings hold a light stand-in class,
which loads the real class on first use and which is replaced by it as soon as the modeling module is imported. The
configurations, processors and the tokenizer class are registered as themselves.

This module imports only the standard library at module level, so that importing the package stays cheap.
"""

import importlib
import importlib.abc
import sys
import threading
from collections.abc import Callable


_PACKAGE = __name__.rpartition(".")[0]
CONFIGURATION_MODULES = (f"{_PACKAGE}.configuration_janus_pro", f"{_PACKAGE}.deepseek_format")
IMAGE_PROCESSING_MODULE = f"{_PACKAGE}.image_processing_janus_pro"
PROCESSING_MODULE = f"{_PACKAGE}.processing_janus_pro"
MODELING_MODULE = f"{_PACKAGE}.modeling_janus_pro"
MODEL_CLASS_NAME = "JanusProForConditionalGeneration"


def _register_configs() -> None:
    from transformers.models.auto.configuration_auto import AutoConfig

    from .configuration_janus_pro import JanusProConfig, JanusProVQConfig
    from .deepseek_format import DeepSeekJanusConfig

    AutoConfig.register(JanusProConfig.model_type, JanusProConfig, exist_ok=True)
    AutoConfig.register(JanusProVQConfig.model_type, JanusProVQConfig, exist_ok=True)
    # DeepSeek's published `multi_modality` config.json loads as a JanusProConfig, so every Auto class below applies.
    AutoConfig.register(DeepSeekJanusConfig.model_type, DeepSeekJanusConfig, exist_ok=True)


def _register_tokenizers() -> None:
    from transformers.models.auto.tokenization_auto import AutoTokenizer, TokenizersBackend

    from .configuration_janus_pro import JanusProConfig
    from .deepseek_format import DeepSeekJanusConfig

    # DeepSeek-LLM's tokenizer is a byte-level BPE `tokenizer.json`, read as it is (no Llama/SentencePiece rebuild).
    AutoTokenizer.register(JanusProConfig, tokenizer_class=TokenizersBackend, exist_ok=True)
    AutoTokenizer.register(DeepSeekJanusConfig, tokenizer_class=TokenizersBackend, exist_ok=True)


def _register_image_processors() -> None:
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from .configuration_janus_pro import JanusProConfig
    from .deepseek_format import DeepSeekJanusConfig
    from .image_processing_janus_pro import JanusProImageProcessor, VLMImageProcessor

    AutoImageProcessor.register(JanusProConfig, image_processor_classes={"pil": JanusProImageProcessor}, exist_ok=True)
    # DeepSeek's processor files name `VLMImageProcessor` (and `VLChatProcessor`, below), and the Auto classes look
    # such names up among registered classes (without consulting config.json): register loader aliases under them.
    AutoImageProcessor.register(DeepSeekJanusConfig, image_processor_classes={"pil": VLMImageProcessor}, exist_ok=True)


def _register_processors() -> None:
    from transformers.models.auto.processing_auto import AutoProcessor

    from .configuration_janus_pro import JanusProConfig
    from .deepseek_format import DeepSeekJanusConfig
    from .processing_janus_pro import JanusProProcessor, VLChatProcessor

    AutoProcessor.register(JanusProConfig, JanusProProcessor, exist_ok=True)
    AutoProcessor.register(DeepSeekJanusConfig, VLChatProcessor, exist_ok=True)


class _LazyClassType(type):
    """Metaclass of the model's stand-in: calling it or reading any attribute it lacks loads the real class."""

    def __call__(cls, *args, **kwargs):
        return cls.load()(*args, **kwargs)

    def __repr__(cls) -> str:
        return f"<class '{cls.__module__}.{cls.__qualname__}' (stand-in, not loaded yet)>"

    def __getattr__(cls, name: str):
        if name.startswith("__") and name.endswith("__"):  # copy/pickle/inspect probes must not import the model
            raise AttributeError(name)
        return getattr(cls.load(), name)


def _lazy_model_class(config_class: type) -> type:
    """
    A stand-in for `JanusProForConditionalGeneration` in the model mappings, light to create: it carries what
    `AutoModel.register` and `AutoModel.from_pretrained` read before loading (`__name__`, `__module__`,
    `config_class`) and forwards everything else (`from_pretrained`, `from_config`, ...) to the real class.
    """

    def load() -> type:
        return getattr(importlib.import_module(MODELING_MODULE), MODEL_CLASS_NAME)

    namespace = {
        "__module__": MODELING_MODULE,
        "__qualname__": MODEL_CLASS_NAME,
        "__doc__": f"Loads `{MODELING_MODULE}.{MODEL_CLASS_NAME}` on first use.",
        "config_class": config_class,
        "load": staticmethod(load),
    }
    return _LazyClassType(MODEL_CLASS_NAME, (), namespace)


def _register_models() -> bool:
    """Registers the real model class when its module is imported, else the stand-in; True once it is the real one."""
    from transformers.models.auto.modeling_auto import (
        MODEL_MAPPING,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
    )

    from .configuration_janus_pro import JanusProConfig

    registered = MODEL_MAPPING.get(JanusProConfig, None)
    modeling = sys.modules.get(MODELING_MODULE)
    model_class = getattr(modeling, MODEL_CLASS_NAME, None)
    if model_class is None:
        if isinstance(registered, _LazyClassType):
            return False
        model_class = _lazy_model_class(JanusProConfig)
    # `AutoModel` gives the full model that can `generate`, as remote-code multimodal models do (InternVL,
    # MiniCPM-V, DeepSeek-VL2): evaluation harnesses load through `AutoModel` and then call `generate`.
    AutoModel.register(JanusProConfig, model_class, exist_ok=True)
    AutoModelForImageTextToText.register(JanusProConfig, model_class, exist_ok=True)
    # It is also a causal language model (text in, next-token logits out): PEFT's `AutoPeftModelForCausalLM` loads a
    # `task_type="CAUSAL_LM"` adapter's base through `AutoModelForCausalLM`, and TRL loads models through it.
    AutoModelForCausalLM.register(JanusProConfig, model_class, exist_ok=True)
    return not isinstance(model_class, _LazyClassType)


# Each step: the transformers module it registers with, the modules of ours it imports, and the step itself (which
# returns False when it must run again later, as the model step does until the real class is loaded).
REGISTRATION_STEPS: tuple[tuple[str, tuple[str, ...], Callable[[], bool | None]], ...] = (
    ("transformers.models.auto.configuration_auto", CONFIGURATION_MODULES, _register_configs),
    ("transformers.models.auto.tokenization_auto", CONFIGURATION_MODULES, _register_tokenizers),
    ("transformers.models.auto.image_processing_auto", (*CONFIGURATION_MODULES, IMAGE_PROCESSING_MODULE), _register_image_processors),
    ("transformers.models.auto.processing_auto", (*CONFIGURATION_MODULES, IMAGE_PROCESSING_MODULE, PROCESSING_MODULE), _register_processors),
    ("transformers.models.auto.modeling_auto", (*CONFIGURATION_MODULES, MODELING_MODULE), _register_models),
)


class _NotifyingLoader:
    """Wraps a watched module's loader: tells the hook when the module starts and ends executing."""

    def __init__(self, loader: importlib.abc.Loader, hook: "AutoRegistrationHook"):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._hook._executing.append(module.__name__)
        try:
            self._loader.exec_module(module)
        finally:
            self._hook._executing.remove(module.__name__)
        self._hook.register_available()

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ... of the wrapped loader
        return getattr(self._loader, name)


class AutoRegistrationHook(importlib.abc.MetaPathFinder):
    """
    A `sys.meta_path` finder that finds nothing itself: it watches the imports of transformers' Auto modules and of
    our modules registered with them, and after each one runs the registration steps that have become possible.

    Steps wait while any watched module is still executing: a module half imported (transformers' `modeling_auto`
    imports `configuration_auto` first; our configuration imports `AutoConfig`) has not defined its names yet.
    """

    def __init__(self, steps=REGISTRATION_STEPS):
        self._steps = steps
        self._watched = {name for auto_module, modules, _ in steps for name in (auto_module, *modules)}
        self._executing: list[str] = []
        self._done: set[Callable] = set()
        self._lock = threading.RLock()
        self._registering = False
        self._pending = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self._watched:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _NotifyingLoader(spec.loader, self)
                return spec
        return None

    def register_available(self) -> None:
        """Run every step whose transformers module is imported, once no watched module is half imported."""
        self._pending = True
        # Never wait for the lock: the thread holding it may be waiting for the import lock this thread holds. The
        # holder sees `_pending` and runs the steps once more.
        if self._executing or not self._lock.acquire(blocking=False):
            return
        try:
            if self._registering:  # called back from an import that a step made: the loop below runs on
                return
            self._registering = True
            try:
                while self._pending and not self._executing:
                    self._pending = False
                    for auto_module, _, step in self._steps:
                        if step not in self._done and auto_module in sys.modules and step() is not False:
                            self._done.add(step)
                            self._pending = True  # a step may have imported what an earlier step waits for
            finally:
                self._registering = False
        finally:
            self._lock.release()


def install_auto_registration() -> AutoRegistrationHook:
    """
    Install the hook once (the package `__init__` calls this) and register with the Auto modules already imported.
    Returns the installed hook.
    """
    hook = next((finder for finder in sys.meta_path if isinstance(finder, AutoRegistrationHook)), None)
    if hook is None:
        hook = AutoRegistrationHook()
        sys.meta_path.insert(0, hook)
    hook.register_available()
    return hook


def register_auto_classes() -> None:
    """
    Register every class with the Auto API now, importing transformers' Auto modules if they are not yet imported
    (the model mappings get the stand-in class until the modeling module is imported). Safe to call again.
    """
    hook = install_auto_registration()
    for auto_module, _, _ in hook._steps:
        importlib.import_module(auto_module)
    hook.register_available()
