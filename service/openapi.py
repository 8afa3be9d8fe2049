"""The OpenAPI document: what every route answers, stated as the server enforces it.

Routes declare their own problem responses from :data:`PROBLEM_RESPONSES`;
:func:`complete_schema` then applies what holds for every route at once:

* every error body is ``application/problem+json`` (FastAPI's own 422 is
  replaced by the problem document the validation handler really sends, and
  a multipart body the form parser cannot read is a documented 400);
* every upload part names the media types the server reads (:data:`UPLOAD_MEDIA_TYPES`)
  and is at least one byte long (no route accepts an empty file);
* the ``model`` of ``POST /encode`` is the one model this deployment's workers encode with.

``tests/service/test_api_schema.py`` runs schemathesis with every check
against this document and the real codec.
"""

from __future__ import annotations

from typing import Any

from service.config import Settings
from service.errors import PROBLEM_JSON
from service.schemas import Problem

BITSTREAM_MEDIA_TYPE = "application/vnd.metalic.bitstream"
"""Media type of a ``.mlic`` container."""

IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff")
"""Media types of the image formats the image policy reads (recognised by magic bytes, not by this label)."""

UPLOAD_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "/encode": IMAGE_MEDIA_TYPES,
    "/compare": IMAGE_MEDIA_TYPES,
    "/decode": (BITSTREAM_MEDIA_TYPE,),
}
"""Path -> media types of its multipart ``file`` part."""

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_problem = {"content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}
PROBLEM_RESPONSES: dict[int | str, dict] = {
    400: {**_problem, "description": "The multipart body cannot be parsed"},
    401: {**_problem, "description": "Missing or invalid API key"},
    404: {**_problem, "description": "No such job for this API key"},
    409: {**_problem, "description": "The job is not in a state that allows this, or an idempotent retry "
                                     "is still in progress; see Retry-After"},
    410: {**_problem, "description": "The result has expired"},
    413: {**_problem, "description": "Upload or image too large"},
    415: {**_problem, "description": "Not an accepted image format"},
    422: {**_problem, "description": "Invalid input"},
    429: {**_problem, "description": "Too many jobs in flight for this key; see Retry-After"},
    503: {**_problem, "description": "Backend or work slots unavailable; see Retry-After"},
}
"""Status -> OpenAPI response of a problem+json answer."""


def problem_responses(*codes: int) -> dict[int | str, dict]:
    """The documented problem answers of a route."""
    return {code: PROBLEM_RESPONSES[code] for code in codes}


def _is_file_part(schema: dict) -> bool:
    return schema.get("contentMediaType") == "application/octet-stream" or schema.get("format") == "binary"


def _complete_body(path: str, operation: dict, components: dict) -> None:
    content = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if content is None:
        return
    operation["responses"].setdefault("400", dict(PROBLEM_RESPONSES[400]))  # the form parser's own answer
    ref = content["schema"].get("$ref", "")
    body = components.get(ref.rsplit("/", 1)[-1], content["schema"])
    for name, prop in body.get("properties", {}).items():
        if _is_file_part(prop):
            prop["minLength"] = 1
            if path in UPLOAD_MEDIA_TYPES:
                content.setdefault("encoding", {})[name] = {"contentType": ", ".join(UPLOAD_MEDIA_TYPES[path])}


def complete_schema(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Apply the rules every route shares to FastAPI's generated document (in place; returns it)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {})
            if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                responses["422"] = dict(PROBLEM_RESPONSES[422])
            _complete_body(path, operation, components)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    encode_form = components.get("Body_encode_encode_post", {}).get("properties", {})
    if "model" in encode_form:
        encode_form["model"]["enum"] = [settings.model]
    return schema
