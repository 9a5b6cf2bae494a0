"""The web demo in headless Chromium: upload a wav, get the chain of thought, the reply and its audio."""

import io
import os
import shutil
import socket
import urllib.request

import pytest
import soundfile as sf

from test.infer.browser import audio_states, headless_chromium

pytestmark = pytest.mark.browser
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(chat_dirs):
    from wenet_echat.bin.chat_app import build_app
    from wenet_echat.infer.session import ChatConf, ChatEngine
    from wenet_echat.model import GenerateConf

    model_dir, t2w_dir, rec = chat_dirs
    engine = ChatEngine.from_dirs(model_dir, t2w_dir, conf=ChatConf(
        generate=GenerateConf(max_text_tokens=120, max_speech_tokens=30)))
    demo = build_app(engine, info="test model")
    demo.queue(default_concurrency_limit=2)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", rec, engine
    finally:
        demo.close()


@pytest.fixture()
def driver():
    d = headless_chromium()
    yield d
    d.quit()


def upload_and_send(driver, url, path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60)
    upload_source = '#user_audio button[aria-label="Upload file"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, upload_source))
    driver.find_element(By.CSS_SELECTOR, upload_source).click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#user_audio input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#user_audio input[type=file]").send_keys(str(path))
    # the upload has reached the server when the component shows a player (or gradio's own error)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#user_audio a[href*='gradio_api/file=']")
               or "Error" in d.find_element(By.CSS_SELECTOR, "#status").text)
    driver.find_element(By.CSS_SELECTOR, "#send").click()
    return wait


def test_upload_gets_think_reply_and_audio(served, driver, tmp_path):
    from selenium.webdriver.common.by import By

    url, rec, engine = served
    wait = upload_and_send(driver, url, rec["wav"])
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#status").text.startswith("done"))
    value = lambda css: driver.find_element(By.CSS_SELECTOR, css).get_attribute("value")  # noqa: E731
    assert value("#think textarea") == rec["think"]
    assert value("#reply textarea") == rec["response"]
    assert rec["response"] in driver.find_element(By.CSS_SELECTOR, "#chatbot").text
    # the whole reply: an audio player whose file is the synthesised wav
    assert driver.find_elements(By.CSS_SELECTOR, "#reply_audio audio")
    href = driver.find_element(By.CSS_SELECTOR, "#reply_audio a[href*='gradio_api/file=']").get_attribute("href")
    with urllib.request.urlopen(href, timeout=10) as resp:
        wav, sr = sf.read(io.BytesIO(resp.read()))
    assert sr == engine.sample_rate and wav.size == engine.token2wav.expected_samples(len(rec["response_tokens"]))
    # the streamed player exists when ffmpeg can encode the stream
    streamed = audio_states(driver, "#reply_stream audio")
    assert all(a["error"] is None for a in streamed)
    if shutil.which("ffmpeg"):
        assert streamed and streamed[0]["src"]
    driver.save_screenshot(str(tmp_path / "chat_app.png"))
    assert (tmp_path / "chat_app.png").stat().st_size > 10_000


def test_bad_upload_shows_a_message(served, driver, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, _ = served
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    wait = upload_and_send(driver, url, bad)
    wait.until(lambda d: "Error" in d.find_element(By.CSS_SELECTOR, "#status").text)
    assert "notes.wav is not an audio file that can be read" in driver.find_element(By.CSS_SELECTOR, "#status").text
    driver.save_screenshot(str(tmp_path / "bad_upload.png"))
