#!/usr/bin/env bash
# Train the three EChat stages through run.sh, each from the previous one's checkpoint:
#   stage 1, understanding (ASR + tags)          = run.sh stage 5 -> exp/stage1
#   speech tokens of the reply audio             = run.sh stage 7 (needed by stage 2; skipped when done)
#   stage 2, generation (TTS, S2S/S2T, text)     = run.sh stage 8 -> exp/stage2
#   stage 3, empathy (S2S with dual thinking)    = run.sh stage 9 -> exp/stage3 (--think false: exp/stage3_nothink)
# Every other run.sh option passes through, e.g. ./train.sh --conf_dir conf/paper --nproc 8. Finished stages are
# skipped and killed ones resume (run.sh's rules). The voice for the demo is run.sh stage 10 (exp/token2wav).
set -euo pipefail
cd "$(dirname "$0")"
for arg in "$@"; do
  case $arg in --stage|--stop_stage|--stage=*|--stop_stage=*)
    echo "train.sh runs run.sh stages 5, 7, 8 and 9; call ./run.sh directly for other stages" >&2; exit 2 ;;
  esac
done
./run.sh --stage 5 --stop_stage 5 "$@"
./run.sh --stage 7 --stop_stage 9 "$@"
