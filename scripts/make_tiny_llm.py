"""Write a tiny random Llama and a tokenizer trained on a dataset's titles (recbole_cora.llm.tiny) to OUT_DIR.

    python scripts/make_tiny_llm.py OUT_DIR --dataset ml-100k [--config_files my.yaml] [--key=value ...]
"""

import argparse

from recbole_cora.config import Config
from recbole_cora.llm.tiny import build_tiny_llm, dataset_texts
from recbole_cora.utils import create_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", nargs="*", default=None)
    args, overrides = parser.parse_known_args(argv)
    config = Config("LightGCN", args.dataset, args.config_files, {"state": "WARNING"}, overrides)
    path = build_tiny_llm(dataset_texts(create_dataset(config), config), args.out_dir)
    print(f"tiny LLM written to {path}")


if __name__ == "__main__":
    main()
