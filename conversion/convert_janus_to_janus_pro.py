# /// script
# dependencies = [
#     "transformers-janus",
# ]
# ///
"""
Convert a checkpoint in transformers' built-in Janus format (`JanusForConditionalGeneration` + `JanusProcessor`) to
the Janus-Pro format of this package:

```
python conversion/convert_janus_to_janus_pro.py --src-dir Janus-Pro-1B-janus --dst-dir Janus-Pro-1B
python conversion/convert_janus_to_janus_pro.py --src-dir deepseek-community/Janus-Pro-7B --dst-dir Janus-Pro-7B --dtype bfloat16 --use-janus-pro-chat-template
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
