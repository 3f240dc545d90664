# /// script
# dependencies = [
#     "transformers-janus",
# ]
# ///
"""
Convert a checkpoint as DeepSeek published it (`model_type: "multi_modality"`) to this package's format (safetensors,
`model_type: "janus_pro"`, processor included):

```
python conversion/convert_deepseek_to_janus_pro.py --src-dir deepseek-ai/Janus-Pro-1B --dst-dir Janus-Pro-1B-hf
python conversion/convert_deepseek_to_janus_pro.py --src-dir Janus-Pro-7B --dst-dir Janus-Pro-7B-hf --dtype bfloat16 --max-shard-size 2GB
```

The arguments and the conversion are `transformers_janus.conversion`'s (`ConversionArguments`, `run_conversion`), as
for `janus-pro convert`; this script only sets `--to ours` as its default. The source's format is read from its
config.json.
"""

from transformers_janus.conversion import make_conversion_parser, run_conversion


if __name__ == "__main__":
    parser = make_conversion_parser(to="ours")
    (args,) = parser.parse_args_into_dataclasses()
    run_conversion(args)
