# Forwarder: the recipe's environment (venv, PYTHONPATH, offline flags) for interactive shells at the root.
. "$(dirname "${BASH_SOURCE[0]}")/egs/echat/path.sh"
