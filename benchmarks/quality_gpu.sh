#!/bin/bash
# The learning curves of benchmarks/quality.py on one GPU: one quality.py process per model, all at once (a
# 135M-parameter LLM leaves most of a GPU idle, so six processes share it), each with its own work folder.
#
#   bash benchmarks/quality_gpu.sh                          # from the checkout's root; ML-1M atomic files in $DATA/ml-1m
#   MODELS="CoRA-MF TALLRec" CURVE=1,4,16 bash benchmarks/quality_gpu.sh
#   MODELS=TALLRec CURVE=1,2,4,8,16,32,64 QARGS="--rows_per_epoch 512 --answer_loss=lm --llm_train_samples=512 \
#     --gradient_accumulation_steps=8" bash benchmarks/quality_gpu.sh   # TALLRec's reference recipe: 512 shots, batch 128
#   TASK=next_item DATASET=ml-1m QARGS="--eval_rows 1000" bash benchmarks/quality_gpu.sh      # Laser, SASRec, BERT4Rec, GRU4Rec
#   TASK=candidates DATASET=ml-1m QARGS="--eval_rows 1000" bash benchmarks/quality_gpu.sh     # RSLLM, Laser, TALLRec, CoRA, ...
#
# Environment: TASK (quality.py's --task: labeled, next_item, candidates), DATASET (its --dataset; default ml-1m),
# MODELS (quality.py's names; default: every row of the task's study), CURVE (its --curve), DATA (its --data_path; default $ROOTQ/data),
# ROOTQ (where the copy of the checkout, the outputs $ROOTQ/qout and the work folders $ROOTQ/qw/<model> go;
# default /tmp), SITE (put first on PYTHONPATH: packages installed with pip --target), THREADS (CPU threads per
# process), TF32 (1: fp32 matrix products in TF32 on the GPU, torch's TORCH_ALLOW_TF32_CUBLAS_OVERRIDE), STAGGER
# (seconds between starts), QARGS (more quality.py options). benchmarks/quality/ml-1m-h200/ is
# `SITE=/tmp/site bash benchmarks/quality_gpu.sh` on one H200, then `quality.py --report` (benchmarks/QUALITY.md §3).
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
[ -n "${SITE:-}" ] && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=${TF32:-1}
ROOTQ=${ROOTQ:-/tmp}
DATA=${DATA:-$ROOTQ/data}
# a copy of the checkout, so that editing or syncing this one does not touch the running processes
rm -rf $ROOTQ/repo && mkdir -p $ROOTQ/repo $ROOTQ/qout
tar --exclude=./.dev --exclude=./.git --exclude=./.venv -cf - . | (cd $ROOTQ/repo && tar xf -)
cd $ROOTQ/repo
TASK=${TASK:-labeled}
case $TASK in
  labeled) DEFAULT_MODELS="CoRA-LightGCN CoRA-MF TALLRec CoLLM-LightGCN RecLoRA ZeroShot" ;;
  next_item) DEFAULT_MODELS="Laser SASRec BERT4Rec GRU4Rec" ;;
  candidates) DEFAULT_MODELS="RSLLM Laser TALLRec CoRA-LightGCN SASRec BERT4Rec" ;;
  *) echo "TASK $TASK: use labeled, next_item or candidates"; exit 2 ;;
esac
MODELS=${MODELS:-$DEFAULT_MODELS}
echo "start $(date +%T) task: $TASK models: $MODELS args: ${QARGS:-}"
for m in $MODELS; do
  mkdir -p $ROOTQ/qw/$m
  python3 benchmarks/quality.py --task $TASK --dataset ${DATASET:-ml-1m} --work $ROOTQ/qw/$m --out $ROOTQ/qout \
    --models $m --curve ${CURVE:-1,2,4,8,16} --data_path $DATA ${QARGS:-} > $ROOTQ/qw/$m.txt 2>&1 &
  sleep ${STAGGER:-2}
done
wait
echo "ALL_DONE $(date +%T)"
