"""The page at ``/`` and the docs at ``/docs``: served from the package, nothing from elsewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

URL_ATTRS = {"src", "href"}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.labels_for: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [value for name, value in attrs.items() if name in URL_ATTRS and value]
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "label" and attrs.get("for"):
            self.labels_for.add(attrs["for"])


def parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def external_hosts(text: str) -> list[str]:
    return re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.IGNORECASE)


def test_page_is_html_with_every_asset_served_locally(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    links = parse(response.text)
    assert links.links and not external_hosts(response.text)
    for link in links.links:
        if link.startswith("#"):
            continue
        assert link.startswith("/"), link
        assert client.get(link).status_code == 200, link


def test_page_scripts_and_styles_load_nothing_from_elsewhere(client):
    for path in ("/static/js/app.js", "/static/js/api.js", "/static/js/compare.js", "/static/app.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert not external_hosts(response.text), path


def test_every_form_control_has_a_label(client):
    links = parse(client.get("/").text)
    for control in ("api-key", "file-input", "target-range", "preset", "left-select", "right-select"):
        assert control in links.ids
        assert control in links.labels_for, control


def test_docs_page_uses_the_vendored_swagger_ui(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert not external_hosts(response.text), external_hosts(response.text)
    links = parse(response.text).links
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in response.text
    for link in links:
        assert client.get(link).status_code == 200, link
    assert '"validatorUrl": null' in response.text


@pytest.mark.parametrize("path", ["/redoc", "/docs/oauth2-redirect"])
def test_pages_that_would_load_a_cdn_are_gone(client, path):
    assert client.get(path).status_code == 404


def test_page_routes_stay_out_of_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/docs" not in paths


def test_page_prefixes_links_with_the_root_path(app):
    from fastapi.testclient import TestClient

    with TestClient(app, root_path="/metalic") as prefixed:
        html = prefixed.get("/").text
    assert 'href="/metalic/static/app.css' in html and 'data-prefix="/metalic"' in html


def test_every_page_file_is_package_data():
    # An installed wheel (the Docker images) has only what package-data names.
    import tomllib
    from pathlib import Path

    import service

    root = Path(service.__file__).parent
    patterns = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    files = [p.relative_to(root).as_posix() for d in ("static", "templates") for p in (root / d).rglob("*") if p.is_file()]
    assert files
    packaged = {p.relative_to(root).as_posix() for pattern in patterns for p in root.glob(pattern)}
    missing = [f for f in files if f not in packaged]
    assert not missing, missing
