"""Run a recbole-cora model, or any RecBole model, under the plugin's labeled protocol.

    python run_recbole_cora.py                                  # the embedded default: CoRA, ml-100k, SmolLM2
    python run_recbole_cora.py --model LightGCN --dataset ml-100k
    python run_recbole_cora.py --config_files my.yaml --learning_rate=0.01

Options other than --model, --dataset and --config_files are RecBole-style --key=value overrides.
"""

import argparse
import os
import sys

from pathlib import Path

EMBEDDED_DEFAULT = Path(__file__).resolve().parent / "properties" / "presets" / "embedded_default.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None, help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (folder under data_path)")
    parser.add_argument("--config_files", nargs="+", default=None, help="YAML files, later ones win")
    args, overrides = parser.parse_known_args(argv)

    from recbole_cora import run_recbole_cora

    config_dict = {}
    if not (args.config_files or args.model or args.dataset):
        args.config_files = [str(EMBEDDED_DEFAULT)]  # the embedded default: CoRA, ml-100k, SmolLM2
    elif not args.config_files:
        config_dict = {"model": "LightGCN", "dataset": "ml-100k"}
    if args.model:
        config_dict["model"] = args.model
    if args.dataset:
        config_dict["dataset"] = args.dataset
    try:
        result = run_recbole_cora(config_file_list=args.config_files, config_dict=config_dict, cmd_args=overrides)
    except (ValueError, FileNotFoundError, KeyError) as err:
        if "--debug" in sys.argv or os.environ.get("RECBOLE_CORA_DEBUG"):
            raise
        # Our own errors say what to change; a traceback from deep inside would hide it.
        print(f"error: {err}", file=sys.stderr)
        print("(set RECBOLE_CORA_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"results saved in {result['results_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
