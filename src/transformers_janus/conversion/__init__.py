"""
Conversion between the three formats a Janus-Pro checkpoint comes in: DeepSeek's as published (`multi_modality`),
this package's (`janus_pro`) and transformers' built-in Janus (`janus`).

One module per role: `checks` (what every conversion checks), `config`, `weights`, `models` and `processors` (ours
<-> built-in, in memory), `directories` (checkpoint directories, DeepSeek's included) and `arguments` (the arguments
the command line and the scripts share). Names are imported on first use, so that `janus-pro --help` stays quick.
"""

import importlib
from typing import TYPE_CHECKING


_EXPORTS = {
    "arguments": ["ConversionArguments", "make_conversion_parser", "run_conversion"],
    "checks": [
        "CHECKPOINT_DTYPES",
        "JanusConversionError",
        "raise_if_problems",
        "dtype_kwargs",
        "check_max_shard_size",
        "check_destination",
        "source_format",
        "has_tokenizer",
        "check_processor_matches",
        "check_checkpoint_tensors",
    ],
    "config": ["janus_pro_config_to_janus", "janus_config_to_janus_pro", "janus_special_token_ids"],
    "weights": ["janus_pro_key_to_janus", "convert_janus_pro_state_dict_to_janus", "convert_janus_state_dict_to_janus_pro"],
    "models": ["janus_pro_to_janus", "janus_to_janus_pro"],
    "processors": ["janus_pro_processor_to_janus", "janus_processor_to_janus_pro"],
    "directories": [
        "convert_deepseek_to_janus_pro",
        "convert_janus_pro_to_janus",
        "convert_janus_to_janus_pro",
        "ConvertedCheckpoint",
        "convert_checkpoint",
        "staged_directory",
    ],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from .arguments import ConversionArguments, make_conversion_parser, run_conversion
    from .checks import (
        CHECKPOINT_DTYPES,
        JanusConversionError,
        check_checkpoint_tensors,
        check_destination,
        check_max_shard_size,
        check_processor_matches,
        dtype_kwargs,
        has_tokenizer,
        raise_if_problems,
        source_format,
    )
    from .config import janus_config_to_janus_pro, janus_pro_config_to_janus, janus_special_token_ids
    from .directories import (
        ConvertedCheckpoint,
        convert_checkpoint,
        convert_deepseek_to_janus_pro,
        convert_janus_pro_to_janus,
        convert_janus_to_janus_pro,
        staged_directory,
    )
    from .models import janus_pro_to_janus, janus_to_janus_pro
    from .processors import janus_pro_processor_to_janus, janus_processor_to_janus_pro
    from .weights import convert_janus_pro_state_dict_to_janus, convert_janus_state_dict_to_janus_pro, janus_pro_key_to_janus


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = list(_MODULE_OF)
