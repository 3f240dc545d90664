# /// script
# dependencies = [
#     "transformers-janus",
# ]
# ///
"""
Convert a Janus-Pro checkpoint (this package's format, or DeepSeek's published `multi_modality` one) to transformers'
built-in Janus format (`JanusForConditionalGeneration` + `JanusProcessor`):

```
python conversion/convert_janus_pro_to_janus.py --src-dir deepseek-ai/Janus-Pro-1B --dst-dir Janus-Pro-1B-janus
python conversion/convert_janus_pro_to_janus.py --src-dir Janus-Pro-7B --dst-dir Janus-Pro-7B-janus --dtype bfloat16 --max-shard-size 2GB
```

The arguments and the conversion are `transformers_janus.conversion`'s (`ConversionArguments`, `run_conversion`), as
for `janus-pro convert`; this script only sets `--to janus` as its default. The source's format is read from its
config.json.
"""

from transformers_janus.conversion import make_conversion_parser, run_conversion


if __name__ == "__main__":
    parser = make_conversion_parser(to="janus")
    (args,) = parser.parse_args_into_dataclasses()
    run_conversion(args)
