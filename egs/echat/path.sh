# Environment for the recipe; sourced by run.sh (works from any directory).
__echat_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$__echat_root/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$__echat_root/.venv/bin/activate"
fi
export PYTHONPATH=$__echat_root${PYTHONPATH:+:$PYTHONPATH}
export PYTHONIOENCODING=UTF-8 PYTHONUTF8=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export LC_ALL=C
unset __echat_root
