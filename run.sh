#!/usr/bin/env bash
# Forwarder: `./run.sh --stage X --stop_stage Y` from the repository root runs the EChat recipe (egs/echat).
exec "$(dirname "$0")/egs/echat/run.sh" "$@"
