"""The LLM judge client against a stub OpenAI-compatible server on 127.0.0.1."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wenet_echat.bin import score as score_cli
from wenet_echat.eval.judge import (
    JudgeClient,
    JudgeConf,
    JudgeError,
    JudgeParseError,
    check_template,
    judge_rows,
    load_judge_conf,
    parse_score,
)

JUDGE_DIR = Path(__file__).resolve().parents[2] / "egs" / "echat" / "conf" / "judge"


@pytest.mark.parametrize("text,score,reason", [
    ('{"score": 7, "reason": "fits the mood"}', 7.0, "fits the mood"),
    ('Sure!\n```json\n{"score": "8.5", "reason": "ok"}\n```', 8.5, "ok"),
    ("Score: 6/10. The reply is fine.", 6.0, None),
    ("**Score**: 9", 9.0, None),
    ("I would give it 4/10.", 4.0, None),
    ("3", 3.0, None),
    ('{"score": 42} but really Score: 5', 5.0, None),  # an out-of-range JSON score is skipped
])
def test_parse_score(text, score, reason):
    assert parse_score(text, 10) == (score, reason)


@pytest.mark.parametrize("text", ["no number here", "between 3 and 4", "Score: 11", ""])
def test_parse_score_errors(text):
    with pytest.raises(JudgeParseError, match="no score"):
        parse_score(text, 10)


def test_shipped_config_and_template_checks(tmp_path):
    conf, template, rubric = load_judge_conf(JUDGE_DIR / "judge.yaml")
    assert conf.score_max == 10 and conf.api_key_env == "OPENAI_API_KEY" and "Paralinguistic" in rubric
    client = JudgeClient(conf, template, rubric)
    prompt = client.prompt({"text": "I lost my keys.", "labels": {"age": "old", "gender": None},
                            "category": "age", "response": "Oh dear, sir.", "response_emotion": "comforting"},
                           {"reply": "Take your time, sir.", "reply_emotion": "comforting"})
    assert '"I lost my keys."' in prompt and "age: old" in prompt and "gender" not in prompt.split("labels)")[1][:40]
    assert "Take your time, sir." in prompt and "{score_max}" not in prompt and "0 to 10" in prompt
    assert '{"score": <number from 0 to 10>' in prompt
    with pytest.raises(ValueError, match="unknown template field"):
        check_template("{reply} {user_name}")
    (tmp_path / "bad.yaml").write_text("base_url: http://x\nmodel: m\nprompt_file: p\nrubric_file: r\ncolour: red\n")
    with pytest.raises(ValueError, match="unknown judge key"):
        load_judge_conf(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="http"):
        JudgeConf(base_url="ftp://x", model="m", prompt_file="p", rubric_file="r")


class StubServer:
    """Answers POST /v1/chat/completions from a queue of (status, content | None, delay)."""

    def __init__(self):
        self.replies: list[tuple[int, str | None, float]] = []
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, content, delay = stub.replies.pop(0) if stub.replies else (200, '{"score": 5}', 0.0)
                time.sleep(delay)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}
                                     if status == 200 else {"error": "stub"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def client_for(url, **kw):
    conf = JudgeConf(base_url=url, model="stub-model", prompt_file="p", rubric_file="r",
                     api_key_env="ECHAT_TEST_JUDGE_KEY", **{"retries": 2, "backoff_s": 0.5, **kw})
    waits = []
    client = JudgeClient(conf, "{rubric} | {transcript} | {reply} | {labels}", "RUBRIC", sleep=waits.append)
    return client, waits


REF = {"key": "k", "text": "hello there", "labels": {"emotion": "sad"}, "response": "I'm sorry."}
ROW = {"key": "k", "reply": "So sorry to hear that.", "reply_emotion": "comforting"}


def test_judge_round_trip_with_retries(monkeypatch):
    monkeypatch.setenv("ECHAT_TEST_JUDGE_KEY", "test-key")
    with StubServer() as srv:
        srv.replies = [(500, None, 0.0), (429, None, 0.0), (200, '{"score": 8, "reason": "caring"}', 0.0)]
        client, waits = client_for(srv.url)
        res = client.score(REF, ROW)
    assert res["judge_score"] == pytest.approx(80.0) and res["judge_reason"] == "caring"
    assert waits == [0.5, 1.0] and client.calls == 3  # exponential backoff
    req = srv.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer test-key"
    body = req["body"]
    assert body["model"] == "stub-model" and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == "RUBRIC | hello there | So sorry to hear that. | emotion: sad"


def test_judge_gives_up_and_client_errors(monkeypatch):
    monkeypatch.delenv("ECHAT_TEST_JUDGE_KEY", raising=False)
    with StubServer() as srv:
        srv.replies = [(200, "no idea", 0.0)] * 3
        client, _ = client_for(srv.url)
        with pytest.raises(JudgeError, match="no score after 3 attempt"):
            client.score(REF, ROW)
        assert srv.requests[-1]["auth"] is None  # no key in the environment: no header
        srv.replies = [(400, None, 0.0)]
        client, waits = client_for(srv.url)
        with pytest.raises(JudgeError, match="HTTP Error 400"):
            client.score(REF, ROW)
        assert client.calls == 1 and waits == []  # a client error is not retried
        srv.replies = [(200, '{"score": 9}', 1.0), (200, '{"score": 9}', 1.0)]
        client, _ = client_for(srv.url, timeout_s=0.2, retries=1)
        with pytest.raises(JudgeError, match="timed out"):
            client.score(REF, ROW)


def test_judge_rows_records_failures():
    with StubServer() as srv:
        srv.replies = [(200, '{"score": 10}', 0.0), (400, None, 0.0)]
        client, _ = client_for(srv.url)
        rows, failures = judge_rows(client, [(REF, ROW), (REF, ROW), (REF, ROW)], max_items=2)
    assert failures == 1 and rows[0]["judge_score"] == 100.0 and "judge_error" in rows[1]
    assert "judge_score" not in rows[2] and "judge_error" not in rows[2]  # beyond max_items
    assert "judge_score" not in ROW  # the input rows are not changed


def test_score_cli_with_judge(tmp_path):
    refs = [{**REF, "key": f"k{i}", "category": "emotion", "labels": {"emotion": "sad", "age": "adult"}}
            for i in range(2)]
    (tmp_path / "ref.list").write_text("".join(json.dumps(r) + "\n" for r in refs))
    (tmp_path / "hyp.jsonl").write_text("".join(json.dumps({**ROW, "key": r["key"], "task": "s2t_chat"}) + "\n"
                                                for r in refs))
    with StubServer() as srv:
        srv.replies = [(200, '{"score": 6}', 0.0), (200, "Score: 9/10", 0.0)]
        (tmp_path / "p.txt").write_text((JUDGE_DIR / "prompt.txt").read_text())
        (tmp_path / "r.txt").write_text("be fair")
        (tmp_path / "judge.yaml").write_text(f"base_url: {srv.url}\nmodel: m\nprompt_file: p.txt\n"
                                             "rubric_file: r.txt\nretries: 0\n")
        assert score_cli.main(["--ref", str(tmp_path / "ref.list"), "--hyp", str(tmp_path / "hyp.jsonl"),
                               "--out", str(tmp_path / "res.md"), "--judge_conf", str(tmp_path / "judge.yaml"),
                               "--no_plots"]) == 0
    scores = json.loads((tmp_path / "res.json").read_text())
    assert scores["chat"]["s2t_chat"]["all"]["judge"] == pytest.approx(75.0)
    assert scores["judge"]["s2t_chat"] == {"calls": 2, "failures": 0, "model": "m"}
    assert "LLM judge score" in (tmp_path / "res.md").read_text()
