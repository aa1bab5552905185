"""Run a recbole-cora model, or any RecBole model, on the labeled task, the next-item task or the candidate task.

    python run_recbole_cora.py                                  # the embedded default: CoRA, ml-100k, SmolLM2
    python run_recbole_cora.py --model Laser                    # the embedded next-item default: Laser, ml-100k, SmolLM2
    python run_recbole_cora.py --model RSLLM                    # the embedded candidate default: RSLLM, ml-100k, SmolLM2
    python run_recbole_cora.py --model LightGCN --dataset ml-100k
    python run_recbole_cora.py --model SASRec --dataset ml-100k --task next_item
    python run_recbole_cora.py --config_files my.yaml --learning_rate=0.01
    python run_recbole_cora.py --config_files my.yaml --resume   # go on with a killed run of it

    python run_recbole_cora.py --compare LightGCN,MF,DeepFM,TALLRec,CoLLM,CoRA --config_files my.yaml
    python run_recbole_cora.py --compare SASRec,BERT4Rec,GRU4Rec,Laser --task next_item
    python run_recbole_cora.py --compare SASRec,GRU4Rec,Laser,RSLLM --task candidates

    python run_recbole_cora.py --model CoRA --config_files my.yaml --params_file hyper.test --tune_trials 20
    python run_recbole_cora.py --model LightGCN --dataset ml-100k --params_file hyper.test --tune_workers 2
    python run_recbole_cora.py --compare LightGCN,MF,CoRA --tune_budget 8   # each tuned with 8 trials first

    python run_recbole_cora.py --predict saved/CoRA-<time> --pairs pairs.tsv      # scores.tsv: a probability per pair
    python run_recbole_cora.py --recommend saved/CoRA-<time> --users 196,186 --topk 10 --pool 50

    python run_recbole_cora.py --trust_checkpoint saved/LightGCN-<time>.pth    # convert a .pth you trust (once)

A params file is RecBole's (`run_hyper.py`): one `name kind values` a line, kind choice, uniform, quniform or
loguniform; trials are chosen on the task's valid_metric and only the best one's test result is reported
(docs/tuning.md).

Options other than --model, --dataset, --task, --config_files, --resume, --compare, --compare_dir, the --tune flags
and those of a saved run (--predict, --pairs, --recommend, --users, --topk, --pool, --out, --trust_checkpoint) are
RecBole-style --key=value overrides: every one, with its default, is in docs/options.md; `model_options: {CoRA:
{epochs: 1}}` in a YAML gives one model of a comparison its own. recbole-cora never unpickles a file: RecBole's .pth files are read through the
safetensors + JSON pair written beside them, or weights-only; --trust_checkpoint converts one you vouch for.
"""

import argparse
import os
import sys

from pathlib import Path

PRESETS = Path(__file__).resolve().parent / "properties" / "presets"
# recbole_cora.tasks.TASKS by name, listed here so that --help imports nothing (tests/test_cli.py checks they agree)
TASK_NAMES = ("labeled", "next_item", "candidates")


def config_file_list(given):
    """``--config_files`` as a list of paths, and those that do not exist. Each argument is one file, or several
    separated by spaces in one quoted argument (RecBole's own ``--config_files "a.yaml b.yaml"``); an argument that
    names an existing file is kept whole, so a path with a space in it still works."""
    files = [part for entry in given for part in ([entry] if Path(entry).is_file() else entry.split())]
    return files, [name for name in files if not Path(name).is_file()]


def embedded_preset(model, task):
    """The embedded default a run without dataset and config files uses: its task's preset (``Task.embedded_preset``:
    CoRA's for the labeled task, Laser's for next_item, RSLLM's for candidates), the task being ``task``, else the
    model's own, else labeled. None: a model of the labeled task without a task or dataset given (it runs on ml-100k
    with its own options; the labeled preset is CoRA's)."""
    from recbole_cora.config import model_tasks
    from recbole_cora.tasks import get_task
    from recbole_cora.utils import get_model

    if task is None and model is not None:
        task = get_task(model_tasks(get_model(model))[0])
        if not task.ranking:
            return None
    return str(PRESETS / get_task(task or "labeled").embedded_preset)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None, help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (folder under data_path)")
    parser.add_argument("--task", "-t", default=None, choices=TASK_NAMES,
                        help="labeled (Yes/No rows), next_item (full ranking) or candidates (a fixed list per user); "
                             "default: the model's own task")
    parser.add_argument("--config_files", nargs="+", default=None,
                        help="YAML files, later ones win: --config_files a.yaml b.yaml, or RecBole's \"a.yaml b.yaml\"")
    parser.add_argument("--compare", default=None, help="comma-separated models to run on one split, e.g. LightGCN,BPR,TALLRec,CoRA")
    parser.add_argument("--compare_dir", default=None, help="comparison folder (to resume one); default results/compare-...")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                        help="go on with a killed run: the newest one of this model with the same options, or RUN "
                             "(its saved folder, e.g. saved/CoRA-Nov-23-2026_10-00-00)")
    parser.add_argument("--params_file", default=None, help="tune: RecBole's params file (name kind values a line)")
    parser.add_argument("--tune_trials", type=int, default=None, help="tune: trials to run (default: the whole grid, or 10)")
    parser.add_argument("--tune_algo", default=None, choices=["exhaustive", "random", "bayes"],
                        help="tune: the search (default: exhaustive when every option is a choice, else bayes)")
    parser.add_argument("--tune_workers", type=int, default=1, help="tune: trials run at once, in as many processes (one GPU each)")
    parser.add_argument("--tune_prune", action="store_true",
                        help="tune: stop a trial whose valid metric falls below the median of the earlier trials' at the same evaluation")
    parser.add_argument("--tune_budget", type=int, default=None,
                        help="with --compare: tune every model with this many trials on valid before its test row")
    parser.add_argument("--tune_dir", default=None, help="tune: the tuning folder (to go on with one); default results/tune-...")
    parser.add_argument("--predict", default=None, metavar="RUN", help="score the --pairs file with a saved run")
    parser.add_argument("--pairs", default=None, help="user<TAB>item[<TAB>time] per line (with --predict)")
    parser.add_argument("--recommend", default=None, metavar="RUN", help="the top --topk items of --users from a saved run")
    parser.add_argument("--users", default=None, help="comma-separated user tokens (with --recommend)")
    parser.add_argument("--topk", type=int, default=10, help="items recommended per user (with --recommend)")
    parser.add_argument("--pool", "--candidates", dest="pool", type=int, default=50,
                        help="the items a recommendation is chosen among (with --recommend): a labeled LLM model "
                             "re-ranks this many of its CF encoder's best items, a candidate-task model ranks a list "
                             "of this many (--candidates is the older name)")
    parser.add_argument("--out", default=None, help="the file --predict / --recommend writes (scores.tsv, recommendations.tsv)")
    parser.add_argument("--trust_checkpoint", default=None, metavar="FILE",
                        help="unpickle this one .pth (RecBole's, or an older recbole-cora's) because you trust where it "
                             "came from, and write FILE's .safetensors + .json beside it; every later read uses those")
    args, overrides = parser.parse_known_args(argv)
    if args.config_files:
        args.config_files, missing = config_file_list(args.config_files)
        if missing:
            print(f"error: --config_files: no file {', '.join(missing)} (from {Path.cwd()}); give each YAML file's "
                  "path, separated by spaces", file=sys.stderr)
            return 2
    if args.trust_checkpoint:
        return trust_checkpoint(args.trust_checkpoint)
    if args.compare:
        return compare(args, overrides)
    if args.predict or args.recommend:
        return use_run(args, overrides)

    from recbole_cora import run_recbole_cora
    from recbole_cora.recbole_files import CorruptCheckpointError, UntrustedCheckpointError
    from recbole_cora.tuning import tune

    config_dict = {}
    try:
        preset = None if args.config_files or args.dataset else embedded_preset(args.model, args.task)
    except ValueError as err:  # an unknown model name
        print(f"error: {err}", file=sys.stderr)
        return 2
    if preset:
        args.config_files = [preset]  # an embedded default: CoRA or Laser, ml-100k, SmolLM2
    elif not args.config_files:
        config_dict = {"model": "LightGCN", "dataset": "ml-100k"}
    if args.task:
        config_dict["task"] = args.task
    if args.model:
        config_dict["model"] = args.model
    if args.dataset:
        config_dict["dataset"] = args.dataset
    if args.resume:
        config_dict["resume"] = args.resume
    try:
        if args.params_file:
            result = tune(args.params_file, args.config_files, config_dict, overrides, folder=args.tune_dir,
                          trials=args.tune_trials, algo=args.tune_algo, workers=args.tune_workers,
                          prune=args.tune_prune)
            print(result["text"])
            print(f"tuning saved in {result['folder']}")
            return 0
        result = run_recbole_cora(config_file_list=args.config_files, config_dict=config_dict, cmd_args=overrides)
    except (ValueError, FileNotFoundError, KeyError, UntrustedCheckpointError, CorruptCheckpointError) as err:
        if "--debug" in sys.argv or os.environ.get("RECBOLE_CORA_DEBUG"):
            raise
        # Our own errors say what to change; a traceback from deep inside would hide it.
        print(f"error: {err}", file=sys.stderr)
        print("(set RECBOLE_CORA_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # the pipeline's log did not show the table
        print(result["table"])
        print(f"results saved in {result['results_dir']}")
    return 0


def _value(text):
    """A --key=value's value as Python reads it (64, True, [1, 2]), else the text itself."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def trust_checkpoint(path):
    """--trust_checkpoint FILE: the one place recbole-cora unpickles a file, because the user named it."""
    from recbole_cora.recbole_files import CorruptCheckpointError, convert_checkpoint

    try:
        tensors, record = convert_checkpoint(path)
    except (FileNotFoundError, CorruptCheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"'{path}' unpickled as you asked; wrote '{tensors}' and '{record}'. recbole-cora reads those from now on "
          "(the .pth itself is never read again).")
    return 0


def check_use_args(args):
    """The flags of --predict / --recommend, checked before anything loads: one sentence for each that is wrong."""
    problems = []
    if args.predict and args.recommend:
        problems.append("--predict and --recommend are two jobs: give one of them.")
    if args.predict:
        if not args.pairs:
            problems.append("--predict needs --pairs FILE: one 'user<TAB>item[<TAB>time]' per line.")
        elif not os.path.isfile(args.pairs):
            problems.append(f"--pairs '{args.pairs}' does not exist.")
    if args.recommend:
        if not args.users or not [u for u in args.users.split(",") if u.strip()]:
            problems.append("--recommend needs --users u1,u2,... (user tokens of the dataset).")
        if args.topk < 1:
            problems.append(f"--topk {args.topk}: give how many items to recommend, 1 or more.")
        if args.pool < 1:
            problems.append(f"--pool {args.pool}: give how many items a recommendation is chosen among, 1 or more.")
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        problems.append(f"--out '{args.out}': its folder does not exist.")
    return problems


def use_run(args, overrides):
    """--predict / --recommend: a saved run scores pairs or recommends items (recbole_cora.runs)."""
    from recbole_cora.config import parse_cmd_args
    from recbole_cora.runs import RunLoadError, load_run, read_pairs, write_scores
    from recbole_cora.recbole_files import CorruptCheckpointError, UntrustedCheckpointError

    problems = check_use_args(args)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        options = {key: _value(value) for key, value in parse_cmd_args(overrides).items()}
        options.setdefault("show_progress", True)
        if args.predict:
            if not args.pairs:
                raise RunLoadError("--predict needs --pairs FILE: one 'user<TAB>item[<TAB>time]' per line.")
            users, items, times, lines = read_pairs(args.pairs)
            run = load_run(args.predict, **options)
            result = run.predict_pairs(users, items, times, show_progress=True, lines=lines)
            if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every process scored its share; one writes
                return 0
            out = args.out or "scores.tsv"
            write_scores(out, users, items, result, result["title"])
            cold = int((~result["warm"]).sum())
            print(f"{len(users)} pairs scored by {run.config['model']} ({cold} cold: a user or item the train split "
                  f"never saw) -> {out}")
            return 0
        if not args.users:
            raise RunLoadError("--recommend needs --users u1,u2,... (user tokens of the dataset).")
        run = load_run(args.recommend, **options)
        users = [u.strip() for u in args.users.split(",") if u.strip()]
        rows = run.recommend(users, k=args.topk, candidates=args.pool, show_progress=True)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        out = args.out or "recommendations.tsv"
        with open(out, "w", encoding="utf-8") as f:
            f.write("user\trank\titem\tscore\ttitle\tcandidates\n")
            for row in rows:
                f.write(f"{row['user']}\t{row['rank']}\t{row['item']}\t{row['score']:.6f}\t{row['title']}\t{row['source']}\n")
        print("| user | rank | item | score | title |\n|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['user']} | {row['rank']} | {row['item']} | {row['score']:.4f} | {row['title']} |")
        print(f"{run.config['model']}: {rows[0]['source'] if rows else ''} re-ranked; saved in {out}")
        return 0
    except (ValueError, FileNotFoundError, KeyError, UntrustedCheckpointError, CorruptCheckpointError) as err:
        if os.environ.get("RECBOLE_CORA_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def compare(args, overrides):
    from recbole.utils import get_local_time

    from recbole_cora.compare import run_comparison, write_comparison

    models = [m.strip() for m in args.compare.split(",") if m.strip()]
    config_dict = {"dataset": args.dataset} if args.dataset else {}
    if args.task:
        config_dict["task"] = args.task
    files = args.config_files
    if not files and not args.dataset:  # compare on an embedded default's data, LLM and sizes
        files = [embedded_preset(models[0] if models else None, args.task) or embedded_preset(None, None)]
    folder = args.compare_dir or os.path.join("results", f"compare-{get_local_time()}")
    results = run_comparison(models, folder, files, config_dict, overrides, tune_budget=args.tune_budget,
                             params_file=args.params_file)
    print(write_comparison(folder, results))
    print(f"comparison saved in {folder}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
