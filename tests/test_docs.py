"""Every Python block of the user docs runs, in order, on the bundled tiny checkpoint."""

import re
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def run_doc(name: str, checkpoint_dir, fixture_dir, monkeypatch) -> dict:
    """Execute the doc's Python blocks in one namespace, the real model id and image swapped for the fixture's."""
    blocks = FENCE.findall((DOCS / name).read_text())
    assert blocks, f"{name} has no Python blocks"
    monkeypatch.chdir(fixture_dir)
    namespace = {}
    for block in blocks:
        code = block.replace('"deepseek-ai/Janus-Pro-1B"', repr(str(checkpoint_dir))).replace('"cat.png"', '"und_image.png"')
        exec(compile(code, name, "exec"), namespace)
    return namespace


def test_usage_doc_runs(checkpoint_dir, fixture_dir, monkeypatch, capsys):
    namespace = run_doc("usage.md", checkpoint_dir, fixture_dir, monkeypatch)
    assert "JanusProForConditionalGeneration JanusProProcessor" in capsys.readouterr().out
    # The greedy chat answer, the pipeline's answer to the same question and the reloaded model agree.
    assert namespace["result"][0]["generated_text"][-1]["content"] == namespace["answer"]
    assert len(namespace["answers"]) == 2 and all(isinstance(answer, str) for answer in namespace["answers"])
    assert type(namespace["reloaded"]) is type(namespace["model"])


def test_conversion_doc_runs(checkpoint_dir, fixture_dir, monkeypatch):
    namespace = run_doc("conversion.md", checkpoint_dir, fixture_dir, monkeypatch)
    assert type(namespace["builtin"]).__name__ == "JanusForConditionalGeneration"
    assert type(namespace["builtin_model"]).__name__ == "JanusForConditionalGeneration"
    restored, model = namespace["restored"].state_dict(), namespace["model"].state_dict()
    assert restored.keys() == model.keys()
    assert type(namespace["remote_model"]).__name__ == "JanusProForConditionalGeneration"


def test_generation_doc_runs(checkpoint_dir, fixture_dir, monkeypatch):
    namespace = run_doc("generation.md", checkpoint_dir, fixture_dir, monkeypatch)
    assert len(namespace["images"]) == 8
    assert type(namespace["generic"]).__name__ == "JanusProImagePipeline"
    assert len(namespace["pictures"]) == 1 and len(namespace["variation"]) == 1
