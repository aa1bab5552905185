"""Run a recbole-cora model, or any RecBole model, under the plugin's labeled protocol.

    python run_recbole_cora.py                                  # the embedded default: CoRA, ml-100k, SmolLM2
    python run_recbole_cora.py --model LightGCN --dataset ml-100k
    python run_recbole_cora.py --config_files my.yaml --learning_rate=0.01
    python run_recbole_cora.py --config_files my.yaml --resume   # go on with a killed run of it

    python run_recbole_cora.py --compare LightGCN,MF,DeepFM,TALLRec,CoLLM,CoRA --config_files my.yaml

Options other than --model, --dataset, --config_files, --resume, --compare and --compare_dir are RecBole-style
--key=value overrides.
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
    parser.add_argument("--compare", default=None, help="comma-separated models to run on one split, e.g. LightGCN,BPR,TALLRec,CoRA")
    parser.add_argument("--compare_dir", default=None, help="comparison folder (to resume one); default results/compare-...")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                        help="go on with a killed run: the newest one of this model with the same options, or RUN "
                             "(its saved folder, e.g. saved/CoRA-Nov-23-2026_10-00-00)")
    args, overrides = parser.parse_known_args(argv)
    if args.compare:
        return compare(args, overrides)

    from recbole_cora import run_recbole_cora
    from recbole_cora.compat import CorruptCheckpointError, UntrustedCheckpointError

    config_dict = {}
    if not (args.config_files or args.model or args.dataset):
        args.config_files = [str(EMBEDDED_DEFAULT)]  # the embedded default: CoRA, ml-100k, SmolLM2
    elif not args.config_files:
        config_dict = {"model": "LightGCN", "dataset": "ml-100k"}
    if args.model:
        config_dict["model"] = args.model
    if args.dataset:
        config_dict["dataset"] = args.dataset
    if args.resume:
        config_dict["resume"] = args.resume
    try:
        result = run_recbole_cora(config_file_list=args.config_files, config_dict=config_dict, cmd_args=overrides)
    except (ValueError, FileNotFoundError, KeyError, UntrustedCheckpointError, CorruptCheckpointError) as err:
        if "--debug" in sys.argv or os.environ.get("RECBOLE_CORA_DEBUG"):
            raise
        # Our own errors say what to change; a traceback from deep inside would hide it.
        print(f"error: {err}", file=sys.stderr)
        print("(set RECBOLE_CORA_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"results saved in {result['results_dir']}")
    return 0


def compare(args, overrides):
    from recbole.utils import get_local_time

    from recbole_cora.compare import run_comparison, write_comparison

    models = [m.strip() for m in args.compare.split(",") if m.strip()]
    config_dict = {"dataset": args.dataset} if args.dataset else {}
    files = args.config_files
    if not files and not args.dataset:
        files = [str(EMBEDDED_DEFAULT)]  # compare on the embedded default's data, LLM and sizes
    folder = args.compare_dir or os.path.join("results", f"compare-{get_local_time()}")
    results = run_comparison(models, folder, files, config_dict, overrides)
    print(write_comparison(folder, results))
    print(f"comparison saved in {folder}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
