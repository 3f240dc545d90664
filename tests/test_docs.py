"""Every Python block of the user docs runs, in order, on the bundled tiny checkpoint."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def doc_blocks(name: str) -> list[str]:
    return FENCE.findall((DOCS / name).read_text())


@pytest.mark.parametrize("name", ["usage.md"])
def test_doc_code_blocks_run(name, checkpoint_dir, fixture_dir, monkeypatch, capsys):
    blocks = doc_blocks(name)
    assert len(blocks) >= 5
    monkeypatch.chdir(fixture_dir)
    namespace = {}
    for block in blocks:
        code = block.replace('"deepseek-ai/Janus-Pro-1B"', repr(str(checkpoint_dir))).replace('"cat.png"', '"und_image.png"')
        exec(compile(code, f"{name}", "exec"), namespace)
    # The greedy chat answer, the pipeline's answer to the same question and the reloaded model agree.
    assert namespace["result"][0]["generated_text"][-1]["content"] == namespace["answer"]
    assert len(namespace["answers"]) == 2 and all(isinstance(answer, str) for answer in namespace["answers"])
    assert type(namespace["reloaded"]) is type(namespace["model"])
    assert "JanusProForConditionalGeneration JanusProProcessor" in capsys.readouterr().out
