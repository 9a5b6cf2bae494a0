"""bench/batches.py: batches per epoch, utterances per batch and log-mel padding of a config's pipeline."""

from __future__ import annotations

import importlib.util

import yaml

from test.echat_fixtures import make_corpus, make_tokenizer

from .conftest import ROOT


def test_counts_follow_the_frame_budget(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("batches_bench", ROOT / "bench" / "batches.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data_list, recs = make_corpus(tmp_path, n=12)  # 0.5-0.8 s: 50-80 log-mel frames
    make_tokenizer(tmp_path, recs)
    conf = {"tokenizer": {"type": "sentencepiece", "model": str(tmp_path / "spm.model")},
            "dataset_conf": {"spec_aug": False, "shuffle": False, "sort": False,
                             "batch_conf": {"batch_type": "dynamic", "max_frames_in_batch": 160}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))

    def run(*extra: str) -> dict[str, str]:
        assert bench.main(["--config", str(tmp_path / "c.yaml"), "--data_list", data_list, *extra]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("batches ")
        return dict(kv.split("=", 1) for kv in line.split()[1:])

    # lengths 51, 61, 71, 81 frames repeating: two per batch under 160 (the third would pad to >= 3 x 71)
    two = run()
    assert two["batches"] == "6" and two["utts"] == "12" and two["max_utts"] == "2"
    pad = 1 - (51 + 61 + 71 + 81) * 3 / ((61 + 81) * 2 * 3)
    assert abs(float(two["feat_pad_share"]) - pad) < 2e-3
    four = run("--override", "dataset_conf.batch_conf.max_frames_in_batch=400")
    assert four["batches"] == "3" and four["utts_per_batch"] == "4.0"
