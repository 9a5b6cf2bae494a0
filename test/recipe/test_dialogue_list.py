"""local/make_dialogue_list.py: each speaker's earlier exchanges become a record's history (CLI in a subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

from wenet_echat.dataset.schema import check_record

SCRIPT = Path(__file__).resolve().parents[2] / "egs" / "echat" / "local" / "make_dialogue_list.py"


def rec(key, spk, text, reply, **extra):
    return {"key": key, "wav": f"{key}.wav", "text": text, "response": reply, "speaker": spk, **extra}


def run(tmp_path, records, *args):
    src, out = tmp_path / "in.list", tmp_path / "out" / "data.list"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(src), str(out), *args], capture_output=True, text=True)
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else None
    return proc, rows


def test_speakers_exchanges_chain_in_order(tmp_path):
    records = [rec("a1", "A", "one", "r1"), rec("b1", "B", "hello", "hi"), rec("a2", "A", "two", "r2"),
               rec("a3", "A", "three", "r3"), rec("a4", "A", "four", "r4"), {"key": "x", "wav": "x.wav", "text": "t"}]
    proc, rows = run(tmp_path, records, "--max_turns", "2")
    assert proc.returncode == 0, proc.stderr
    assert "6 records, 3 with history" in proc.stdout
    by_key = {r["key"]: r for r in rows}
    assert [r["key"] for r in rows] == [r["key"] for r in records]
    assert "history" not in by_key["a1"] and "history" not in by_key["b1"] and "history" not in by_key["x"]
    assert by_key["a2"]["history"] == [{"text": "one", "response": "r1"}]
    assert by_key["a4"]["history"] == [{"text": "two", "response": "r2"}, {"text": "three", "response": "r3"}]
    assert all(check_record(r) == [] for r in rows)


def test_bad_history_is_named_and_nothing_is_written(tmp_path):
    records = [rec("a1", "A", "one", "r1"), rec("a2", "A", "two", "r2", history=[{"text": "x"}])]
    proc, rows = run(tmp_path, records)
    assert proc.returncode != 0 and rows is None
    assert "in.list:2: key 'a2': history[0].response must be a non-empty string" in proc.stderr
