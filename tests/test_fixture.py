"""The golden fixture is what DeepSeek's reference code produced (tests/fixtures/make_fixture.py): unaltered, byte for byte."""

import hashlib


def test_golden_files_match_their_recorded_checksums(fixture_dir):
    recorded = {}
    for line in (fixture_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        recorded[name] = digest
    present = {str(path.relative_to(fixture_dir)) for path in fixture_dir.rglob("*") if path.is_file()}
    assert present - {"SHA256SUMS"} == set(recorded), "files added to or missing from the fixture"
    changed = [
        name for name, digest in recorded.items() if hashlib.sha256((fixture_dir / name).read_bytes()).hexdigest() != digest
    ]
    assert not changed, f"golden files changed: {changed}"
