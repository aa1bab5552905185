"""docs/datasets.md walks through docs/example/: run it as written, and check the page shows the files."""

import re
import subprocess
import sys

import yaml

from conftest import ROOT


def test_the_documented_example_runs_and_the_page_matches_the_files(tmp_path):
    page = (ROOT / "docs" / "datasets.md").read_text()
    shown_yaml = re.search(r"```yaml\n(.*?)```", page, re.S).group(1)
    example = ROOT / "docs" / "example" / "toy-books.yaml"
    assert yaml.safe_load(shown_yaml) == yaml.safe_load(example.read_text())
    for name in ("toy-books.inter", "toy-books.item"):
        head = (ROOT / "docs" / "example" / "toy-books" / name).read_text().splitlines()[:2]
        assert "\n".join(head) in page

    done = subprocess.run(
        [sys.executable, str(ROOT / "run_recbole_cora.py"), "--config_files", str(example), "--model", "LightGCN",
         f"--data_path={ROOT / 'docs' / 'example'}", "--state=WARNING", "--epochs=20"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| LightGCN | all | 134 |" in done.stdout

    done = subprocess.run(  # the same YAML, the next-item task
        [sys.executable, str(ROOT / "run_recbole_cora.py"), "--config_files", str(example), "--model", "SASRec",
         f"--data_path={ROOT / 'docs' / 'example'}", "--state=WARNING", "--epochs=2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\| SASRec \| users \| \d+ \| \d\.\d{4} \|", done.stdout), done.stdout[-2000:]

    from recbole_cora.config import Config
    from recbole_cora.utils import create_dataset

    config = Config("FM", config_file_list=[str(example)], config_dict={"data_path": str(ROOT / "docs" / "example"), "state": "ERROR"})
    data = create_dataset(config)
    parts = data.build()
    assert [len(p) for p in parts] == [368, 98, 134]
    assert data.item_title(data.token2id("item_id", "b05")) == '"The Clockmaker\'s Daughter" by R. Tanaka'
    assert parts[2].inter_feat["history_item_id"].shape[1] == 5
