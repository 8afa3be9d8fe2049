"""The try-it page in Chromium against ``metalic serve`` with the real codec.

``METALIC_UPDATE_SCREENSHOTS=1`` writes the README's screenshots to docs/images/.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import API_KEY, ROOT

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
BAD_IMPACTS = ("serious", "critical")


def photo(width: int, height: int, seed: int = 0) -> bytes:
    """A smooth synthetic image with a little noise and an edge, PNG-encoded."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], -1)
    rgb[height // 3: 2 * height // 3, width // 4: width // 2] = (230, 60, 40)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def screenshot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("METALIC_UPDATE_SCREENSHOTS"):
        folder = ROOT / "docs" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name
    return tmp_path / name


def open_page(page, key: str = API_KEY):
    page.goto("/")
    page.wait_for_selector("body[data-app='ready']")
    if key is not None:
        page.get_by_label("API key", exact=True).fill(key)


def submit(page, files: list[dict], target: str = "0.5", preset: str = "balanced", refine_steps: str | None = None):
    page.locator("#file-input").set_input_files(files)
    page.locator("#target-number").fill(target)
    page.get_by_label("Preset").select_option(preset)
    if refine_steps is not None:
        page.get_by_text("Stage options").click()
        page.get_by_label("Refinement steps").fill(refine_steps)
    page.get_by_role("button", name="Encode").click()


def row(page, index: int = 0):
    return page.locator("li.job").nth(index)


def job_via_api(server, job_id: str) -> dict:
    return httpx.get(f"{server.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"}).json()


def axe_violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    assert result["passes"], "axe checked nothing"
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in BAD_IMPACTS]


def test_page_loads_and_reports_the_service_ready(page):
    open_page(page, key=None)
    assert page.title() == "metalic: try it"
    page.wait_for_function("document.querySelector('#service-status').dataset.ready === 'true'")
    assert re.match(r"Ready: 1 worker", page.locator("#service-status").inner_text())
    assert page.get_by_role("link", name="API documentation").get_attribute("href") == "/docs"


def test_key_is_kept_for_the_tab_only(page):
    open_page(page)
    page.reload()
    page.wait_for_selector("body[data-app='ready']")
    assert page.get_by_label("API key", exact=True).input_value() == API_KEY
    assert page.evaluate("localStorage.length") == 0
    page.get_by_role("button", name="Forget").click()
    assert page.evaluate("sessionStorage.getItem('metalic-api-key')") is None


def test_encode_shows_progress_then_the_compare_view(page, server, tmp_path):
    open_page(page)
    submit(page, [upload("gradient.png", photo(128, 96))], target="0.5", preset="balanced")
    job = row(page)
    # Progress advances: several distinct running states (stage, step, bpp, PSNR) are shown.
    seen, values = [], []
    deadline = time.monotonic() + 180
    shot = False
    while time.monotonic() < deadline:
        status = job.get_attribute("data-status")
        if status == "running":
            text = job.locator(".job-detail").inner_text()
            if text and (not seen or seen[-1] != text):
                seen.append(text)
                values.append(job.locator("progress").evaluate("p => p.value"))
            if not shot and "step" in text and "refine" in text:
                page.screenshot(path=screenshot_path(tmp_path, "page-running.png"), full_page=True)
                shot = True
        elif status in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.05)
    assert job.get_attribute("data-status") == "succeeded", job.inner_text()
    assert len(seen) >= 3, seen
    assert any("refine" in text for text in seen) and any(re.search(r"\d+\.\d+ dB", text) for text in seen)
    refine_values = [v for text, v in zip(seen, values) if "refine" in text]
    # Each refinement run counts its steps up; a rate-search trial that refines again starts a
    # new run (its label restarts at a low step), so the values rise within each run.
    runs = [[refine_values[0]]] if refine_values else []
    for v in refine_values[1:]:
        if v >= runs[-1][-1]:
            runs[-1].append(v)
        else:
            runs.append([v])
    assert runs and len(runs) <= 3, refine_values
    assert any(run[-1] > run[0] for run in runs), refine_values

    # The compare view opens with the original on the left and metalic on the right.
    compare = page.locator("#compare")
    compare.wait_for(state="visible")
    page.wait_for_selector("#metrics-table tr[data-codec='avif'], #metrics-table tr[data-codec='webp']",
                           timeout=120_000)
    assert page.locator("#left-select").input_value() == "original"
    assert page.locator("#right-select").input_value() == "metalic"
    page.wait_for_function("document.querySelector('#right-image').naturalWidth === 128")

    # The metrics are the job's.
    api_job = job_via_api(server, job.get_attribute("data-job-id"))
    meta, size = api_job["result"]["metadata"], api_job["result"]["bytes"]
    metalic = page.locator("#metrics-table tr[data-codec='metalic'] td")
    assert metalic.nth(0).inner_text() == f"{size:,} B"
    assert metalic.nth(1).inner_text() == f"{meta['bpp']:.3f}"
    assert metalic.nth(2).inner_text() == f"{meta['psnr']:.2f}"
    assert "refinement" in page.locator("#timings-table").inner_text()
    assert page.locator("#timings-table tr.total td").first.inner_text() == f"{meta['seconds']['total']:.2f}"
    for codec in ("jpeg", "webp", "avif"):
        cells = page.locator(f"#metrics-table tr[data-codec='{codec}'] td")
        if not cells.count():
            continue
        assert int(cells.nth(0).inner_text().replace(",", "").removesuffix(" B")) <= size
        assert 10 < float(cells.nth(2).inner_text()) < 60

    # Move the divider with the mouse: the clip of the right image follows it.
    page.locator("#viewer").scroll_into_view_if_needed()
    viewer = page.locator("#viewer").bounding_box()
    grip = page.locator("#divider .grip").bounding_box()
    clip_before = page.locator("#right-image").evaluate("i => i.style.clipPath")
    page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
    page.mouse.down()
    page.mouse.move(viewer["x"] + viewer["width"] * 0.25, grip["y"] + grip["height"] / 2, steps=8)
    page.mouse.up()
    assert 20 <= int(page.locator("#divider").get_attribute("aria-valuenow")) <= 30
    assert page.locator("#right-image").evaluate("i => i.style.clipPath") != clip_before

    # Zoom and pan move both images together: they share one transformed stage.
    zoom_before = page.locator("#zoom-level").inner_text()
    page.get_by_role("button", name="Zoom in").click()
    assert page.locator("#zoom-level").inner_text() != zoom_before
    page.mouse.move(viewer["x"] + viewer["width"] * 0.7, viewer["y"] + 100)
    transform = page.locator("#stage").evaluate("s => s.style.transform")
    page.mouse.down()
    page.mouse.move(viewer["x"] + viewer["width"] * 0.7 - 40, viewer["y"] + 130, steps=4)
    page.mouse.up()
    assert page.locator("#stage").evaluate("s => s.style.transform") != transform
    page.get_by_role("button", name="Fit").click()

    # Any codec on either side, here AVIF (or WebP) on the right.
    other = "avif" if page.locator("#metrics-table tr[data-codec='avif']").count() else "webp"
    page.locator("#right-select").select_option(other)
    page.wait_for_function("document.querySelector('#right-image').naturalWidth === 128")
    assert page.locator("#right-image").get_attribute("src").startswith(f"data:image/{other};base64,")
    page.locator("#right-select").select_option("metalic")
    page.locator("#divider").focus()
    for _ in range(12):
        page.keyboard.press("ArrowRight")
    page.screenshot(path=screenshot_path(tmp_path, "page-compare.png"), full_page=True)

    # The .mlic and the decoded PNG download as the files the API has.
    with page.expect_download() as download:
        job.get_by_role("link", name="Download .mlic").click()
    assert Path(download.value.path()).stat().st_size == size
    assert download.value.suggested_filename == "gradient.mlic"
    with page.expect_download() as download:
        job.get_by_role("link", name="Download decoded PNG").click()
    assert Image.open(download.value.path()).size == (128, 96)


def test_a_batch_gets_one_row_each_and_jobs_can_be_canceled(page):
    open_page(page)
    # Long refinements on the one worker: one job runs while the other waits in the queue.
    submit(page, [upload("first.png", photo(96, 64, 1)), upload("second.png", photo(64, 64, 2))],
           preset="balanced", refine_steps="3000")
    assert page.locator("li.job").count() == 2
    statuses = "() => [...document.querySelectorAll('li.job')].map(li => li.dataset.status).sort().join(',')"
    page.wait_for_function(f"({statuses})() === 'queued,running'", timeout=120_000)
    running = page.locator("li.job[data-status='running']")
    queued = page.locator("li.job[data-status='queued']")
    running_name, queued_name = running.locator("h3").inner_text(), queued.locator("h3").inner_text()
    queued.get_by_role("button", name=f"Cancel {queued_name}").click()
    page.wait_for_function(f"({statuses})() === 'canceled,running'")
    page.locator("li.job[data-status='running']").get_by_role("button", name=f"Cancel {running_name}").click()
    page.wait_for_function(f"({statuses})() === 'canceled,canceled'", timeout=60_000)
    assert page.get_by_role("button", name=re.compile("^Cancel ")).count() == 0
    assert page.locator("li.job .badge").all_inner_texts() == ["canceled", "canceled"]
    assert page.locator("#compare").is_hidden()


def test_a_bad_upload_shows_the_api_message(page, page_log):
    page_log.expect_http_error(415)
    page_log.expect_http_error(401)
    open_page(page, key=None)
    page.get_by_role("button", name="Encode").click()
    assert "Enter an API key first" in page.get_by_role("alert").first.inner_text()
    page.get_by_label("API key", exact=True).fill(API_KEY)
    submit(page, [upload("notes.png", b"these are notes, not pixels\n", "image/png")])
    alert = row(page).get_by_role("alert")
    alert.wait_for(state="visible")
    assert alert.inner_text() == ("Unsupported media type: the upload is not a PNG, JPEG, WebP, BMP or TIFF image")
    assert row(page).get_attribute("data-status") == "rejected"
    # A wrong key is a readable message too, not a blank page.
    page.get_by_label("API key", exact=True).fill("not-the-key")
    submit(page, [upload("tiny.png", photo(16, 16))], preset="fast")
    alert = row(page, 1).get_by_role("alert")
    alert.wait_for(state="visible")
    assert alert.inner_text() == "Invalid api key: the API key is not valid"
    assert page.locator("main").is_visible()


def test_keyboard_only_encode_and_compare(page):
    open_page(page, key=None)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    # From the skip link to the key, then on through the form in order.
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.name"))
    assert order[:3] == ["api-key", "api-key-forget", "file-input"], order
    page.locator("#api-key").focus()
    page.keyboard.type(API_KEY)
    page.locator("#file-input").set_input_files([upload("keys.png", photo(64, 64, 3))])
    page.get_by_label("Preset").focus()
    page.keyboard.press("Home")  # fast
    assert page.get_by_label("Preset").input_value() == "fast"
    page.get_by_role("button", name="Encode").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('li.job').dataset.status === 'succeeded'", timeout=120_000)
    page.locator("#compare").wait_for(state="visible")
    page.get_by_role("button", name="Compare keys.png").wait_for(state="visible")
    page.get_by_role("button", name="Compare keys.png").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "viewer"
    page.keyboard.press("Shift+ArrowLeft")
    assert page.locator("#divider").get_attribute("aria-valuenow") == "40"
    page.keyboard.press("f")
    assert (page.locator("#left-select").input_value(), page.locator("#right-select").input_value()) == \
        ("metalic", "original")
    zoom = page.locator("#zoom-level").inner_text()
    page.keyboard.press("+")
    assert page.locator("#zoom-level").inner_text() != zoom
    page.keyboard.press("0")
    assert page.locator("#zoom-level").inner_text() == zoom
    page.keyboard.down("2")
    assert page.locator("#divider").get_attribute("aria-valuenow") == "0"
    page.keyboard.up("2")
    assert page.locator("#divider").get_attribute("aria-valuenow") == "40"


def test_no_serious_accessibility_violations(page):
    open_page(page)
    assert axe_violations(page) == []
    submit(page, [upload("axe.png", photo(64, 48, 4))], preset="fast")
    page.wait_for_selector("#metrics-table tr[data-codec='jpeg']", timeout=120_000)
    page.get_by_text("Stage options").click()
    assert axe_violations(page) == []


def test_docs_page_renders_offline(page):
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    assert page.locator(".opblock-summary-path", has_text="/encode").count() >= 1
    assert page.locator(".opblock-summary-path", has_text="/compare").count() >= 1


def test_drop_paste_and_a_psnr_target(page, server):
    open_page(page)
    page.evaluate("""() => {
        const file = (name) => new File([new Uint8Array([137, 80, 78, 71])], name, {type: 'image/png'});
        const dropped = new DataTransfer();
        dropped.items.add(file('dropped.png'));
        document.querySelector('#drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: dropped, bubbles: true, cancelable: true}));
        const pasted = new DataTransfer();
        pasted.items.add(file('pasted.png'));
        document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: pasted, bubbles: true, cancelable: true}));
    }""")
    assert page.locator("#chosen-files li").count() == 2
    assert "dropped.png" in page.locator("#chosen-files").inner_text()
    page.get_by_role("button", name="Remove dropped.png").click()
    page.get_by_role("button", name=re.compile(r"^Remove ")).click()
    assert page.locator("#chosen-files li").count() == 0

    page.get_by_label("a quality (PSNR in dB)").check()
    assert page.locator("#target-label").inner_text() == "Target PSNR in dB"
    assert page.locator("#target-number").input_value() == "32"
    submit(page, [upload("psnr.png", photo(64, 64, 5))], target="30", preset="fast")
    page.wait_for_function("document.querySelector('li.job').dataset.status === 'succeeded'", timeout=120_000)
    options = job_via_api(server, row(page).get_attribute("data-job-id"))["options"]
    assert options["target_psnr"] == 30 and options.get("target_bpp") is None
