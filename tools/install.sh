#!/usr/bin/env bash
# Set up wenet-echat on a fresh machine; safe to re-run (each step checks first and says what it did).
#
#   bash tools/install.sh            # Debian tools (if root) + .venv with torch 2.13.0 CPU + wenet_echat[dev]
#   VENV=/path/to/venv bash tools/install.sh
#   SKIP_APT=1 bash tools/install.sh # never call apt-get
#   SKIP_DEMO_APT=1 bash tools/install.sh  # no ffmpeg/chromium (web demo streaming, browser test)
#
# Steps:
#  1. Debian packages the recipe needs (TTS voices and sox for the EChat-mini corpus) and the web demo's
#     (ffmpeg for streamed reply audio, chromium + chromium-driver for the browser test); apt-get when root,
#     `sudo -n` when allowed, otherwise a message listing what to install.
#  2. A virtual environment (default: <repo>/.venv) on Python >= 3.11.
#  3. torch==2.13.0 first (the CPU build; an unpinned torch would pull GBs of CUDA wheels), then the package
#     with its [dev] extras (eval metrics, the gradio demo + silero-vad, selenium) under constraints.txt,
#     then openai-whisper without its 1 GB triton dependency (the tests compare our features and encoder with
#     it; it needs no weights), and resemblyzer without its webrtcvad pin (speaker similarity for evaluation;
#     the model ships in the wheel).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
VENV=${VENV:-$root/.venv}
PYTHON=${PYTHON:-python3}
did=()
say() { echo "[install] $*"; }

# ---- 1. Debian packages -------------------------------------------------------------------------------
# apt_install WHAT PKG...: install the missing ones with apt-get (root or `sudo -n`), else say what is missing
apt_updated=
apt_install() {
  local what=$1; shift
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages for $what: all present ($*)"
    return 0
  fi
  if [ -n "${SKIP_APT:-}" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "WARNING: missing Debian packages for $what: ${missing[*]}"
    say "         install them with your package manager"
    return 0
  fi
  local sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo_cmd=(sudo -n); else
      say "WARNING: missing Debian packages for $what: ${missing[*]} and no root/sudo; run as root:"
      say "         apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
      return 0
    fi
  fi
  say "apt-get install ${missing[*]} ($what)"
  if [ -z "$apt_updated" ]; then "${sudo_cmd[@]}" apt-get update -q; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  did+=("apt: ${missing[*]}")
}

# the corpus synthesis (TTS voices, sox) and its tests; procps (pgrep): the recipe stops a background stage with it
apt_install "the EChat-mini corpus and the recipe" espeak-ng sox libsox-fmt-all flite festival festvox-us-slt-hts \
  festvox-kallpc16k festvox-kdlpc16k procps
# the web demo: ffmpeg encodes the streamed reply audio (gradio); chromium + its driver run the browser test
# (skipped without them); set SKIP_DEMO_APT=1 to leave these out
if [ -z "${SKIP_DEMO_APT:-}" ]; then
  apt_install "the web demo and its browser test" ffmpeg chromium chromium-driver
fi

# ---- 2. virtual environment ----------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { say "ERROR: $PYTHON is $($PYTHON --version 2>&1); Python >= 3.11 is required"; exit 1; }
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
  did+=("venv: $VENV")
else
  say "virtual environment: $VENV (exists)"
fi
py=$VENV/bin/python
pip=("$py" -m pip install -q --disable-pip-version-check)

# ---- 3. Python packages --------------------------------------------------------------------------------
if "$py" -c 'import torch, sys; sys.exit(not torch.__version__.startswith("2.13.0"))' 2>/dev/null; then
  say "torch: $("$py" -c 'import torch; print(torch.__version__)') (present)"
else
  say "installing torch==2.13.0"
  "${pip[@]}" torch==2.13.0
  did+=("torch 2.13.0")
fi

# re-install only when the dependency declarations changed since the last successful install
stamp=$VENV/.wenet_echat_deps.sha256
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import wenet_echat' 2>/dev/null; then
  say "wenet_echat[dev]: installed, dependencies unchanged"
else
  say "installing wenet_echat[dev] (editable, constraints.txt)"
  "${pip[@]}" -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
  did+=("wenet_echat[dev]")
fi

if "$py" -c 'import whisper' 2>/dev/null; then
  say "openai-whisper: present"
else
  say "installing openai-whisper (--no-deps) + tiktoken more-itertools numba"
  "${pip[@]}" -c constraints.txt --no-deps openai-whisper
  "${pip[@]}" -c constraints.txt tiktoken more-itertools numba
  did+=("openai-whisper")
fi

if "$py" -c 'import resemblyzer' 2>/dev/null; then
  say "resemblyzer: present"
else
  say "installing resemblyzer (--no-deps; its deps come with wenet_echat[eval])"
  "${pip[@]}" -c constraints.txt --no-deps resemblyzer
  did+=("resemblyzer")
fi

"$py" -c 'import torch, wenet_echat; print(f"[install] check: torch {torch.__version__}, wenet_echat {wenet_echat.__version__}")'
if [ ${#did[@]} -eq 0 ]; then say "nothing to do: everything was already installed"; else
  say "done: ${did[*]}"; fi
