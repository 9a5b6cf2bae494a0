#!/usr/bin/env bash
# Option parsing for recipe scripts (Kaldi convention), sourced after the defaults are declared:
#
#   stage=0; nj=4; use_gpu=false
#   . tools/parse_options.sh
#
# Turns `--some-opt value` or `--some_opt=value` into `some_opt=value` for every *declared* variable; an
# undeclared option is an error (typos never pass silently). Variables whose default is true/false accept only
# true/false. `--config FILE` sources FILE (shell assignments) before later options; `--help` / `-h` prints
# $help_message and exits 0. Parsing stops at the first argument that is not an option; what is left stays in "$@".

__po_usage() { printf '%s\n' "${help_message:-Usage: $0 [options]}" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      printf '%s\n' "${help_message:-Usage: $0 [options]}"
      exit 0 ;;
    --config)
      [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 2; }
      [ -r "$2" ] || { echo "$0: --config: cannot read '$2'" >&2; exit 2; }
      # shellcheck disable=SC1090
      . "$2"
      shift 2 ;;
    --*=*|--*)
      __po_arg=${1#--}
      if [[ $__po_arg == *=* ]]; then
        __po_name=${__po_arg%%=*}; __po_value=${__po_arg#*=}; __po_shift=1
      else
        [ $# -ge 2 ] || { echo "$0: option --$__po_arg needs a value" >&2; __po_usage; exit 2; }
        __po_name=$__po_arg; __po_value=$2; __po_shift=2
      fi
      __po_name=${__po_name//-/_}
      if [[ ! $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_name+set}" ]; then
        echo "$0: invalid option --${__po_arg%%=*} (not a declared option; see --help)" >&2
        exit 2
      fi
      case "${!__po_name}" in
        true|false)
          case "$__po_value" in
            true|false) ;;
            *) echo "$0: option --$__po_name takes true or false, got '$__po_value'" >&2; exit 2 ;;
          esac ;;
      esac
      printf -v "$__po_name" '%s' "$__po_value"
      shift "$__po_shift" ;;
    *) break ;;
  esac
done
unset __po_arg __po_name __po_value __po_shift
true
