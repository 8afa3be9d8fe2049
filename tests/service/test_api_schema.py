"""The OpenAPI schema tells the truth: schemathesis with every check, against the real codec.

In process (ASGI) on the private Redis, with the real codec behind the API
(its image policy, option schema and decoder) and a registered worker, so
that /readyz is legitimately 200. Every check schemathesis has runs on every
generated request, valid and invalid: no 5xx, every response as documented
(status, content type, headers, body), schema-valid requests accepted and
schema-invalid ones refused, ``Allow`` on 405, auth not ignored. Uploads are
real files of the media types the schema names (tests/service/schema_hooks.py).
``METALIC_FUZZ_EXAMPLES`` sets the cases per operation (default 30);
docs/BENCHMARKS.md has the counts of the run against a live ``metalic serve``.
"""

from __future__ import annotations

import collections
import os

import pytest
import schema_hooks  # noqa: F401  (upload media types, fresh idempotency keys)
import schemathesis
from api_helpers import KEY_A
from hypothesis import HealthCheck, settings

from codec.options import MAX_LAMBDA_STEPS, MAX_REFINE_STEPS, TARGET_BPP_RANGE, TARGET_PSNR_RANGE
from service.errors import PROBLEM_JSON
from service.openapi import BITSTREAM_MEDIA_TYPE, IMAGE_MEDIA_TYPES

EXAMPLES = int(os.environ.get("METALIC_FUZZ_EXAMPLES", "30"))

CHECKS_EXPECTED_ON = (
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance", "missing_required_header",
    "unsupported_method", "allow_header_conformance", "use_after_free", "ensure_resource_availability",
    "ignored_auth", "object_level_authorization")
"""schemathesis 4.32.5's checks (all but max_response_time, which needs a limit)."""


@pytest.fixture
def real_app(settings):
    from service.main import create_app

    # more jobs in flight than the cases submit, so valid uploads reach the queue rather than the quota
    return create_app(settings.model_copy(update={"preload_model": "", "max_jobs_in_flight": 10_000}))


@pytest.fixture
def api_schema(real_app, redis_conn, monkeypatch):
    from rq import Queue

    from worker import protocol
    from worker.main import EncodeWorker

    worker = EncodeWorker([Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer="json")],
                          connection=redis_conn, serializer="json")
    worker.register_birth()
    real_app.state.codec.preload("metalic-vr", "cpu")  # so /readyz is ready, as a live service is
    monkeypatch.setenv("METALIC_API_KEY", KEY_A)  # ./schemathesis.toml's credential for the bearer scheme
    loaded = schemathesis.openapi.from_asgi("/openapi.json", real_app)
    loaded.config.generation.update(modes=list(schemathesis.GenerationMode))
    # every check is on by default; ./schemathesis.toml turns one off for one read, with the reason
    assert all(loaded.config.checks.get_by_name(name=name).enabled for name in CHECKS_EXPECTED_ON)
    yield loaded
    worker.register_death()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_check_passes(case):
    case.call_and_validate()


def test_every_check_passes_across_calls(api_schema):
    api_schema.as_state_machine().run(settings=settings(
        max_examples=max(5, EXAMPLES // 3), stateful_step_count=6, deadline=None,
        suppress_health_check=list(HealthCheck)))
    # the calls were authenticated and their uploads real: jobs were made and read back
    assert ANSWERS["POST /encode", 202] and ANSWERS["GET /jobs/{job_id}", 200], ANSWERS


ANSWERS: collections.Counter = collections.Counter()
"""(operation, status) -> responses seen in this process."""


@schemathesis.hook
def after_call(context, case, response):
    ANSWERS[case.operation.label, response.status_code] += 1


class TestTheDocument:
    """What the schema states, read directly: the server's own rules, in the codec's own numbers."""

    @pytest.fixture
    def document(self, real_app):
        return real_app.openapi()

    def test_every_error_is_documented_as_problem_json_only(self, document):
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")) and (path, status) != ("/readyz", "503"):
                        assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
        assert "HTTPValidationError" not in document["components"]["schemas"]

    def test_the_encode_form_states_the_option_schema(self, document, settings):
        body = document["components"]["schemas"]["Body_encode_encode_post"]["properties"]
        assert (body["target_bpp"]["minimum"], body["target_bpp"]["maximum"]) == TARGET_BPP_RANGE
        assert (body["target_psnr"]["minimum"], body["target_psnr"]["maximum"]) == TARGET_PSNR_RANGE
        assert body["refine_steps"]["maximum"] == MAX_REFINE_STEPS
        assert body["lambda_steps"]["maximum"] == MAX_LAMBDA_STEPS
        assert body["model"]["enum"] == [settings.model]
        assert all("anyOf" not in field for field in body.values())  # a form field is sent or left out, never null
        encode = document["paths"]["/encode"]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert {"required": ["target_bpp", "lmbda"]} in encode["schema"]["not"]["anyOf"]

    @pytest.mark.parametrize("path, media_types", [("/encode", IMAGE_MEDIA_TYPES), ("/compare", IMAGE_MEDIA_TYPES),
                                                   ("/decode", (BITSTREAM_MEDIA_TYPE,))])
    def test_uploads_name_their_media_types_and_are_never_empty(self, document, path, media_types):
        content = document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert content["encoding"]["file"]["contentType"].split(", ") == list(media_types)
        ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
        assert document["components"]["schemas"][ref]["properties"]["file"]["minLength"] == 1
