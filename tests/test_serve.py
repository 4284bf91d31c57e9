"""python -m mit_semseg.serve through its real HTTP interface (the server on 127.0.0.1 on a free port): the API, the
bad-input battery, the queue's 503, SIGTERM; the page in headless Chromium."""

import base64
import concurrent.futures
import io
import json
import signal
import struct
import uuid
import zlib

import cv2
import numpy as np
import pytest
from helpers import TRAINED_CONFIG
from PIL import Image
from serving import request, serving

from mit_semseg import Segmenter
from mit_semseg.config import load_config

MODEL = TRAINED_CONFIG.stem
# One worker runs this file: its module fixture starts a server.
pytestmark = pytest.mark.xdist_group("test_serve")


def _multipart(field, filename, data):
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    root, opts = trained
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with (
        open(log, "w") as f,
        serving(TRAINED_CONFIG, opts, "--max-body-mb", "1", "--max-megapixels", "1", log=f) as (_, port),
    ):
        yield port, root, opts, log


def test_the_api_answers_as_segmenter_and_test_py(server):
    port, root, opts, log = server
    photo = root / "photos" / "a.jpg"
    data = photo.read_bytes()
    labels = Segmenter(load_config(TRAINED_CONFIG, opts), "cpu").predict(str(photo))
    status, headers, body = request(port, "POST", "/v1/segment", data, {"Content-Type": "image/jpeg"})
    assert status == 200 and headers["content-type"] == "application/json", body
    answer = json.loads(body)
    assert (answer["model"], answer["height"], answer["width"]) == (MODEL, *labels.shape) and answer["seconds"] > 0
    counts = np.bincount(labels.ravel(), minlength=8) / labels.size
    assert [(c["id"], c["share"]) for c in answer["heads"]["classes"]["classes"]] == [
        (c, pytest.approx(counts[c])) for c in np.argsort(-counts, kind="stable") if counts[c] > 0.001
    ]
    # the label map: the file test.py writes (class + 1), raw or as a multipart upload
    form, form_headers = _multipart("image", "a.jpg", data)
    status, headers, png = request(port, "POST", "/v1/segment?output=label", form, form_headers)
    assert status == 200 and headers["content-type"] == "image/png"
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), labels + 1)
    status, _, with_map = request(port, "POST", "/v1/segment?include=map", data)
    mapped = np.frombuffer(base64.b64decode(json.loads(with_map)["heads"]["classes"]["map"]), "<u2")
    np.testing.assert_array_equal(mapped.reshape(labels.shape), labels + 1)
    status, _, overlay = request(port, "POST", "/v1/segment?output=overlay", data)
    assert status == 200 and cv2.imdecode(np.frombuffer(overlay, np.uint8), cv2.IMREAD_COLOR).shape == (
        *labels.shape,
        3,
    )
    # the models, the health check, the OpenAPI document and the page
    models = json.loads(request(port, "GET", "/v1/models")[2])
    assert (
        [m["name"] for m in models] == [MODEL]
        and models[0]["default"]
        and len(models[0]["heads"]["classes"]["colors"]) == 8
    )
    assert json.loads(request(port, "GET", "/healthz")[2]) == {"status": "ok", "models": [MODEL]}
    assert "/v1/segment" in json.loads(request(port, "GET", "/openapi.json")[2])["paths"]
    page = request(port, "GET", "/")[2].decode()
    assert "/static/page.js" in page and "http" not in page.replace("http-equiv", "")  # nothing from elsewhere
    assert request(port, "GET", "/static/page.js")[0] == 200
    lines = [line for line in log.read_text().splitlines() if "mit_semseg.serve" in line]
    assert sum("POST /v1/segment" in line for line in lines) >= 4 and any(" 200 " in line for line in lines)


def _png_header(width, height):
    """A PNG whose header says width x height (8-bit grey) with a few rows of data: a small file, huge when decoded."""
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def _encoded(kind, size=(40, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, kind)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "path, body, headers, status, message",
    [
        ("/v1/segment", b"", {}, 400, "the request has no image"),
        ("/v1/segment", b"hello, world", {}, 415, "not an image file: send JPEG, PNG, WEBP, BMP"),
        ("/v1/segment", "GIF", {}, 415, "images in GIF are not accepted"),
        ("/v1/segment", "truncated", {}, 400, "corrupt or truncated"),
        ("/v1/segment", _png_header(2000, 1000), {}, 413, "2000 x 1000 = 2000000 pixels, above the limit of 1000000"),
        ("/v1/segment", _png_header(100_000, 100_000), {}, 413, "above the limit of 1000000 pixels"),
        ("/v1/segment", b"\0" * (2**20 + 1), {}, 413, "above the limit of 1048576"),
        ("/v1/segment?model=other", "PNG", {}, 404, "no model 'other' is loaded; loaded: " + MODEL),
        ("/v1/segment?output=svg", "PNG", {}, 422, "output"),
        ("/v1/segment?output=label&head=part", "PNG", {}, 400, "has no head 'part'; its heads: classes"),
        ("/v1/segment", "form without file", {}, 400, "the multipart form has no file"),
        ("/v1/segment", b"--x\r\n", {"Content-Type": "multipart/form-data"}, 400, "does not parse"),
        ("/v1/segment", b"12", {"Content-Length": "99999999999"}, 413, "above the limit"),
    ],
    ids=lambda v: v if isinstance(v, int) else None,
)
def test_every_bad_request_gets_a_4xx_naming_what_was_wrong(server, path, body, headers, status, message):
    port = server[0]
    if body == "GIF":
        body = _encoded("GIF")
    elif body == "truncated":
        body = _encoded("PNG", (300, 200))[:200]
    elif body == "PNG":
        body = _encoded("PNG")
    elif body == "form without file":
        boundary = "b0undary"
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--{boundary}--\r\n'.encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        got, _, answer = request(port, "POST", path, body, headers)
    except (ConnectionResetError, BrokenPipeError):  # it may answer 413 and close before the body is all sent
        pytest.skip("the connection closed while sending")
    assert got == status and message in answer.decode(), answer
    # and it still answers: a 1 x 1 image, and the wrong method
    assert request(port, "POST", "/v1/segment", _encoded("PNG", (1, 1)))[0] == 200
    assert request(port, "GET", "/v1/segment")[0] == 405


def test_a_full_queue_answers_503_with_retry_after(trained):
    _, opts = trained
    image = _encoded("PNG", (640, 480))
    with serving(TRAINED_CONFIG, opts, "--queue-size", "1") as (_, port):
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: request(port, "POST", "/v1/segment", image), range(12)))
        statuses = sorted(a[0] for a in answers)
        assert set(statuses) == {200, 503}, statuses  # never an error, never an unbounded backlog
        busy = next(a for a in answers if a[0] == 503)
        assert busy[1]["retry-after"] == "2" and b"is busy: 1 requests are waiting" in busy[2]


def test_queued_images_of_one_size_run_together_with_the_same_labels(trained):
    """--batch 4: concurrent requests of one size go through the network together (their answers say how many),
    and each gets the labels Segmenter.predict gives it alone."""
    root, opts = trained
    photo = cv2.imread(str(root / "photos" / "a.jpg"))
    images = [np.roll(cv2.resize(photo, (320, 240)), 20 * k, axis=1) for k in range(6)]
    segmenter = Segmenter(load_config(TRAINED_CONFIG, opts), "cpu")
    alone = [segmenter.predict(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) for image in images]
    files = [cv2.imencode(".png", image)[1].tobytes() for image in images]
    with serving(TRAINED_CONFIG, opts, "--batch", "4") as (_, port):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda f: request(port, "POST", "/v1/segment?include=map", f), files))
    assert [a[0] for a in answers] == [200] * 6
    bodies = [json.loads(a[2]) for a in answers]
    assert max(b["batch"] for b in bodies) > 1 and all(1 <= b["batch"] <= 4 for b in bodies)
    for body, labels in zip(bodies, alone):
        mapped = np.frombuffer(base64.b64decode(body["heads"]["classes"]["map"]), "<u2").reshape(labels.shape)
        np.testing.assert_array_equal(mapped, labels + 1)


def test_sigterm_finishes_what_is_in_flight(trained, tmp_path):
    _, opts = trained
    image = _encoded("PNG", (640, 480))
    log = tmp_path / "server.log"
    with open(log, "w") as f, serving(TRAINED_CONFIG, opts, "--queue-size", "4", log=f) as (process, port):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            pending = [pool.submit(request, port, "POST", "/v1/segment", image) for _ in range(3)]
            first = next(concurrent.futures.as_completed(pending))
            process.send_signal(signal.SIGTERM)  # the other two are in the server: queued or running
            assert first.result()[0] == 200 and [p.result()[0] for p in pending] == [200, 200, 200]
        assert process.wait(timeout=30) == -signal.SIGTERM  # uvicorn ends by the signal it stopped for, once done
    assert "Application shutdown complete" in log.read_text()


def _browser(width, height):
    """Headless Chromium of the distribution (`apt-get install chromium chromium-driver`, as .ci/run does)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("the page test needs chromium and chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(driver))


def test_the_page_segments_a_photo_in_a_browser(server, tmp_path):
    """Chromium opens the page, uploads a photo, and shows the legend Segmenter.predict's labels give; the pointer
    names the class under it; a failure is said plainly; it fits a phone-sized window."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, root, opts, _ = server
    photo = root / "photos" / "b.jpg"
    labels = Segmenter(load_config(TRAINED_CONFIG, opts), "cpu").predict(str(photo))
    counts = np.bincount(labels.ravel(), minlength=8) / labels.size
    browser = _browser(1000, 800)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#model option"))
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#legend li"))
        shown = [
            (li.find_element(By.CLASS_NAME, "name").text, li.find_element(By.CLASS_NAME, "share").text)
            for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")
        ]
        class_names = [line.split(",")[-1] for line in (root / "data" / "class_info.csv").read_text().splitlines()[1:]]
        expected = [
            (class_names[c], f"{100 * counts[c]:.1f}%") for c in np.argsort(-counts, kind="stable") if counts[c] > 0.001
        ]
        assert shown == expected
        overlay = browser.find_element(By.ID, "overlay")
        ActionChains(browser).move_to_element(overlay).perform()  # its centre
        y, x = labels.shape[0] // 2, labels.shape[1] // 2
        pointer = browser.find_element(By.ID, "pointer").text
        assert pointer.startswith(class_names[labels[y, x]]), (pointer, class_names[labels[y, x]])
        browser.save_screenshot(str(tmp_path / "page.png"))
        # a failure is said: a file that is not an image
        (tmp_path / "notes.txt").write_text("not a photo")
        browser.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
        WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "error").is_displayed())
        assert "Could not segment notes.txt" in browser.find_element(By.ID, "error").text
        # a phone-sized window: nothing wider than the screen
        browser.set_window_size(390, 844)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
    finally:
        browser.quit()
