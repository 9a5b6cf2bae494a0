"""Turn an official OSUM-EChat checkpoint into a model directory that ``bin/decode.py`` loads.

    python -m wenet_echat.bin.convert_official \\
        --checkpoint exp/pretrained/OSUM-EChat/tag_think_final.pt \\
        --config conf/paper/train_stage3.yaml --llm_dir exp/pretrained/Qwen2.5-3B-Instruct \\
        --model_dir exp/osum_echat_tag [--think_style tag|natural] [--dtype bfloat16]
    python -m wenet_echat.bin.decode --model_dir exp/osum_echat_tag --data_list data/test/data.list \\
        --tasks s2s_think --out exp/osum_echat_tag/decode_test/hyp.jsonl

``--config`` supplies the model shapes (encoder, adapter, speech codes; its ``init`` is ignored), ``--llm_dir``
the LLM's ``config.json`` and tokenizer (its weights are not read: the checkpoint holds the LLM). The think
variant comes from the file name (``tag_think*`` -> tag, ``language_think*`` -> natural) unless
``--think_style`` is given. Writes ``<model_dir>/{train.yaml,final/,latest,tokenizer/}``; any mismatch between the
checkpoint and the config is reported with the tensor names and nothing is written under ``final/``.
"""

from __future__ import annotations

import argparse
import sys

from wenet_echat.infer.official import OfficialConversionError, convert_official
from wenet_echat.model.convert import OfficialCheckpointError
from wenet_echat.utils.logging import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", required=True, help="official .pt (flat state dict)")
    p.add_argument("--config", required=True, help="stage config or model.yaml with the model shapes")
    p.add_argument("--llm_dir", required=True, help="HF directory of the LLM (config.json + tokenizer)")
    p.add_argument("--model_dir", required=True, help="directory to write")
    p.add_argument("--think_style", default=None, choices=["tag", "natural"],
                   help="default: from the file name")
    p.add_argument("--dtype", default=None, help="LLM dtype (llm_conf.torch_dtype), e.g. bfloat16")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        res = convert_official(args.checkpoint, args.config, args.llm_dir, args.model_dir, args.think_style,
                               args.dtype)
    except (OfficialConversionError, OfficialCheckpointError, FileNotFoundError) as e:
        print(f"convert_official: {e}", file=sys.stderr)
        return 1
    print(f"wrote {res['model_dir']}: {res['tensors']} tensors, {res['params'] / 1e6:.1f} M parameters, "
          f"think_style {res['think_style']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
