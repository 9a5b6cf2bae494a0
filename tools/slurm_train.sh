#!/usr/bin/env bash
# Multi-node training under Slurm: one torchrun per node, rendezvous on the first node (c10d), 8 GPUs per node.
#
#   sbatch --nodes 4 --gres gpu:8 --ntasks-per-node 1 --cpus-per-task 64 tools/slurm_train.sh \
#       --config conf/paper/train_stage2.yaml --train_data data/train/data.tok.shards.list \
#       --cv_data data/dev/data.tok.shards.list --data_type shard --model_dir exp/stage2 --init exp/stage1/final
#
# Every argument goes to wenet_echat.bin.train; run it from egs/echat (the paths are relative to the recipe).
# GPUS_PER_NODE and RDZV_PORT may be set in the environment. The same model_dir resumes after a requeue
# (sbatch --requeue): bin/train.py picks up the latest checkpoint exactly.
#SBATCH --job-name=echat-train
#SBATCH --output=exp/slurm/%x-%j.out
#SBATCH --requeue
set -euo pipefail

gpus_per_node=${GPUS_PER_NODE:-8}
rdzv_port=${RDZV_PORT:-29400}
if [ -z "${SLURM_JOB_NODELIST:-}" ]; then
  echo "$0: not inside a Slurm allocation (submit it with sbatch, see the header)" >&2
  exit 2
fi
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
nnodes=${SLURM_NNODES:-1}
mkdir -p exp/slurm
echo "$(date) job $SLURM_JOB_ID: $nnodes node(s) x $gpus_per_node GPU(s), rendezvous $head_node:$rdzv_port" >&2

. ./path.sh
# one task per node; torchrun starts the per-GPU workers and sets RANK/LOCAL_RANK/WORLD_SIZE for them
srun --kill-on-bad-exit=1 torchrun \
  --nnodes "$nnodes" --nproc_per_node "$gpus_per_node" \
  --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:$rdzv_port" \
  -m wenet_echat.bin.train "$@"
