"""The documentation site (mkdocs.yml over docs/) builds in strict mode: a broken link, a page missing from the nav
or a nav entry without its page fails; and README links to every page of it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_in_strict_mode(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "options" / "index.html").is_file()


def test_the_readme_links_every_page_of_the_site_and_each_link_exists():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = []
    for entry in nav:
        for value in entry.values():
            pages += [v for item in value for v in item.values()] if isinstance(value, list) else [value]
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert {f"docs/{page}" for page in pages if page != "index.md" and not page.startswith("models/")} <= linked
    for target in re.findall(r"\]\(((?:docs|benchmarks|examples)/[^)#]*|[A-Z]+\.md)\)", readme):
        assert (ROOT / target).exists(), target
