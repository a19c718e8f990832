"""The review page: FastAPI routes, and a real headless Chromium approving an image."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from tests.review.browser import chromium, serving
from tests.review.conftest import EVIL_ID
from vitrina.review.web import create_app


@pytest.fixture
def client(filled_store, tmp_path):
    return TestClient(create_app(filled_store, "demo", "ann", root=tmp_path))


def test_page_lists_images_and_escapes_ids(client):
    html = client.get("/").text
    assert html.count('class="card"') == 4
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "unchecked (4)" in html
    assert client.get("/?status=approved").text.count('class="card"') == 0
    assert client.get("/?status=nope").status_code == 400


def test_status_route_writes_a_review_event(client, filled_store):
    image_id = int(filled_store.images("demo").set_index("product_id").loc[EVIL_ID, "image_id"])
    answer = client.post(f"/api/images/{image_id}/status", json={"status": "approved"})
    assert answer.json() == {"image_id": image_id, "status": "approved", "changed": 1}
    assert filled_store.approved_ids("demo") == {EVIL_ID}
    events = filled_store.events("demo")
    assert events[["product_id", "new_status", "reviewer", "source"]].values.tolist() == [
        [EVIL_ID, "approved", "ann", "web"]
    ]
    assert client.post(f"/api/images/{image_id}/status", json={"status": "meh"}).status_code == 400
    assert client.post("/api/images/999/status", json={"status": "bad"}).status_code == 404


def test_picture_and_overlay_are_served_by_id_only(client, filled_store, tmp_path):
    image_id = int(filled_store.images("demo").loc[0, "image_id"])
    picture = client.get(f"/images/{image_id}/picture")
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    overlay = client.get(f"/images/{image_id}/overlay")
    assert overlay.headers["content-type"] == "image/png" and len(overlay.content) > 200
    (tmp_path / "img0.png").unlink()
    assert client.get(f"/images/{image_id}/picture").status_code == 404
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd/picture").status_code in (404, 422)


def test_other_catalogues_are_not_reachable(filled_store, tmp_path):
    client = TestClient(create_app(filled_store, "other", "ann", root=tmp_path))
    image_id = int(filled_store.images("demo").loc[0, "image_id"])
    assert client.get(f"/images/{image_id}/picture").status_code == 404
    assert 'class="card"' not in client.get("/").text


@pytest.mark.slow
def test_a_reviewer_approves_an_image_in_a_real_browser(filled_store, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(filled_store, "demo", "ann", root=tmp_path)
    with serving(app) as url, chromium(tmp_path / "profile") as driver:
        driver.get(url)
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == 4
        card = cards[1]
        image_id = int(card.get_attribute("data-id"))
        card.find_element(By.CSS_SELECTOR, "button.approve").click()
        WebDriverWait(driver, 10).until(
            ec.text_to_be_present_in_element(
                (By.CSS_SELECTOR, f"#image-{image_id} .status"), "approved"
            )
        )
        # every picture and overlay loaded (naturalWidth 0 means a broken image)
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)"
        )
        deadline = time.monotonic() + 10
        while -1 in widths and time.monotonic() < deadline:
            time.sleep(0.1)
            widths = driver.execute_script(
                "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)"
            )
        assert widths == [96] * 8
        shot = tmp_path / "review_page.png"
        driver.save_screenshot(str(shot))
    row = filled_store.image(image_id)
    assert row["status"] == "approved" and row["reviewer"] == "ann"
    assert filled_store.events("demo")["source"].tolist() == ["web"]
    assert shot.stat().st_size > 10_000
