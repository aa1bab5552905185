#!/usr/bin/env bash
# Data-parallel scaling on CPU: one short CoRA training epoch on the tiny random LLM, with 1 process and
# then with 2 processes (torchrun), the same global batch and the same rows; prints samples/s of each
# epoch (RecBole's "epoch 0 training [time: ...]", i.e. the training loop only, without validation)
# and the ratio 2-process / 1-process. Each process gets the same number of threads (default 1), so the
# ratio is what a second worker adds (2 processes need 2x --threads cores to themselves).
#
#   benchmarks/bench_scaling.sh [--rows N] [--batch-size B] [--threads T] [--workdir DIR] [--key=value ...]
#
#   --rows        training rows of the epoch (train_rows_per_epoch; default 256)
#   --batch-size  global batch (train_batch_size; default 16, must divide by 2)
#   --threads     torch/OpenMP threads per process (default 1)
#   --workdir     keep logs, the tiny LLM and the CF stage here (default: a temporary folder, removed after)
#   --key=value   passed on to run_recbole_cora.py (e.g. --query_width=512 --query_layers=8)
#   PYTHON=...    the interpreter (default: the checkout's .venv/bin/python, else python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
ROWS=256
BATCH=16
THREADS=1
WORKDIR=""
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    --*=*) EXTRA+=("$1"); shift ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if (( BATCH % 2 )); then echo "--batch-size must divide by 2" >&2; exit 2; fi
if (( 2 * THREADS > $(nproc) )); then echo "note: 2 processes x $THREADS thread(s) > $(nproc) cores" >&2; fi

if [[ -z "$WORKDIR" ]]; then
  WORKDIR=$(mktemp -d -t bench_scaling-XXXXXX)
  trap 'rm -rf "$WORKDIR"' EXIT
fi
mkdir -p "$WORKDIR"
cd "$WORKDIR"  # RecBole writes log/ and saved/ into the working directory
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ ! -f tiny_llm/config.json ]]; then
  echo "building the tiny LLM (tokenizer trained on ml-100k's titles) in $WORKDIR/tiny_llm" >&2
  "$PYTHON" "$ROOT/scripts/make_tiny_llm.py" tiny_llm --dataset ml-100k --state=WARNING > build_tiny.log 2>&1
fi

# the small CoRA of tests/test_distributed.py, dropout off; validation on a few rows only
OPTIONS=(
  --model CoRA --dataset ml-100k --state=INFO --show_progress=False --llm_path="$WORKDIR/tiny_llm"
  --query_layers=1 --query_width=32 --query_heads=2 --num_queries=2 --lora_rank=4 --lora_alpha=8
  --query_dropout=0.0 --lora_dropout=0.0 --train_rows_per_epoch="$ROWS" --train_batch_size="$BATCH"
  --eval_rows=32 --eval_batch_size=32 --epochs=1 --checkpoint_steps=0
  "--cf_config={'epochs':1,'embedding_size':16}" --cf_checkpoint_dir="$WORKDIR/cf"
  "${EXTRA[@]}"
)

epoch_seconds() {  # CoRA's epoch 0 training time from a run's log (after "LLM trainer:"; a CF stage logs its own)
  sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '/LLM trainer:/ {on = 1} on && /epoch 0 training \[time:/ {
    sub(/.*epoch 0 training \[time: /, ""); sub(/s,.*/, ""); print; exit }'
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p one two
echo "1 process, $THREADS thread(s) ..." >&2
(cd one && OMP_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/run_recbole_cora.py" "${OPTIONS[@]}") > one.log 2>&1 \
  || { tail -40 one.log >&2; exit 1; }
echo "2 processes, $THREADS thread(s) each ..." >&2
(cd two && OMP_NUM_THREADS=$THREADS "$PYTHON" -m torch.distributed.run --nproc_per_node 2 \
  --master_addr 127.0.0.1 --master_port "$(free_port)" "$ROOT/run_recbole_cora.py" "${OPTIONS[@]}") > two.log 2>&1 \
  || { tail -40 two.log >&2; exit 1; }
grep -q "1 process(es)" one.log || { echo "the first run did not report 1 process" >&2; exit 1; }
grep -q "2 process(es)" two.log || { echo "the second run did not report 2 processes" >&2; exit 1; }

T1=$(epoch_seconds one.log)
T2=$(epoch_seconds two.log)
if [[ -z "$T1" || -z "$T2" ]]; then echo "no 'epoch 0 training [time: ...]' line in the logs ($WORKDIR)" >&2; exit 1; fi
ROWS_DONE=$(( ROWS / BATCH * BATCH ))  # drop_last
awk -v cores="$(nproc)" -v rows="$ROWS_DONE" -v t1="$T1" -v t2="$T2" -v th="$THREADS" -v b="$BATCH" 'BEGIN {
  s1 = rows / t1; s2 = rows / t2
  printf "CoRA training on the tiny LLM, %d rows in batches of %d (global), %d cores\n\n", rows, b, cores
  printf "| processes | threads each | epoch s | samples/s |\n|---:|---:|---:|---:|\n"
  printf "| 1 | %d | %.2f | %.1f |\n", th, t1, s1
  printf "| 2 | %d | %.2f | %.1f |\n", th, t2, s2
  printf "\nscaling 2 / 1 processes: %.2fx\n", s2 / s1
}'
