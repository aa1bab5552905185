"""docs/options.md is what the YAML files give (scripts/options_reference.py), and every option there says its type
and what it does."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import options_reference  # noqa: E402


def test_the_options_reference_is_generated_from_the_yaml_files():
    assert options_reference.main(["--check"]) == 0, "run python scripts/options_reference.py"


def test_every_option_has_a_type_and_a_description():
    files = [options_reference.PROPERTIES / "overall.yaml", *sorted(options_reference.PROPERTIES.glob("*/*.yaml"))]
    undocumented = [f"{path.name}: {name}" for path in files if path.parent.name != "presets" and path.parent.name != "hyper"
                    for _, rows in options_reference.read_options(path) for name, _, kind, text in rows
                    if not kind or not text]
    assert undocumented == []


def test_a_comment_and_a_nested_default_are_read(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("# Heading\nkey: 'a # b'   # (str) What it does, over two/\n                #   lines.\n"
                    "nested:   # (dict) A dict.\n  inner: 1\n")
    assert options_reference.read_options(path) == [
        ("Heading", [("key", "'a # b'", "str", "What it does, over two/lines."), ("nested", "inner: 1", "dict", "A dict.")])]
