#!/usr/bin/env python3
"""The web demo on this recipe's models: ``python infer_gradio.py`` (from egs/echat), then open
http://127.0.0.1:7860. Defaults: the newest trained stage (exp/stage3, else exp/stage2, else exp/stage1) and
exp/token2wav when it exists; every option of ``wenet_echat.bin.chat_app`` works here too (``--help``)."""

import os
import sys

RECIPE = os.path.dirname(os.path.abspath(__file__))
STAGES = ("exp/stage3", "exp/stage2", "exp/stage1")


def default_args(argv: list[str]) -> list[str]:
    extra = []
    if "--model_dir" not in argv:
        found = next((d for d in STAGES if os.path.isfile(os.path.join(RECIPE, d, "train.yaml"))), STAGES[0])
        extra += ["--model_dir", os.path.join(RECIPE, found)]
    if "--token2wav_dir" not in argv and os.path.isfile(os.path.join(RECIPE, "exp/token2wav/token2wav.yaml")):
        extra += ["--token2wav_dir", os.path.join(RECIPE, "exp/token2wav")]
    if "--recipe_dir" not in argv:
        extra += ["--recipe_dir", RECIPE]
    return extra + argv


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(RECIPE)))  # the repository root, if not installed
    from wenet_echat.bin.chat_app import main

    sys.exit(main(default_args(sys.argv[1:])))
