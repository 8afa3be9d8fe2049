"""One encode-option schema (codec.options.EncodeOptions) behind the CLI, the API form, the job payload and the SDK."""

from __future__ import annotations

from dataclasses import fields

import pytest

from codec.options import EncodeOptions, validate_options

OPTIONS = {f.name for f in fields(EncodeOptions)}

EVERY_OPTION = {"target_bpp": 0.4, "preset": "max", "refine": True, "adapt_lambda": False, "bias_search": True,
                "rate_control": False, "refine_steps": 7, "lambda_steps": 3, "rounding": "ste", "model": "metalic-vr"}
"""A value for every option but the other two targets (at most one target is allowed)."""


def test_the_example_sets_every_option():
    assert set(EVERY_OPTION) | {"lmbda", "target_psnr"} == OPTIONS


def test_cli_has_a_flag_for_every_option():
    import argparse

    from metalic.coding import _encode_arguments

    parser = argparse.ArgumentParser()
    _encode_arguments(parser)
    dests = {a.dest for a in parser._actions}
    assert OPTIONS <= dests, OPTIONS - dests


def test_cli_passes_every_option_through(tmp_path, monkeypatch):
    """The CLI's flags reach validate_options unchanged."""
    import metalic.coding as coding

    seen = {}

    def stop(options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr("codec.options.validate_options", stop)
    argv = ["x.png", "-o", str(tmp_path / "x.mlic"), "--bpp", "0.4", "--preset", "max", "--refine", "--no-adapt-lambda",
            "--bias-search", "--no-rate-control", "--refine-steps", "7", "--lambda-steps", "3", "--rounding", "ste",
            "--model", "metalic-vr"]
    import argparse

    parser = argparse.ArgumentParser()
    coding._encode_arguments(parser)
    with pytest.raises(SystemExit):
        coding.cmd_encode(parser.parse_args(argv))
    assert {k: v for k, v in seen.items() if v is not None} == EVERY_OPTION


class TestService:
    def test_job_create_has_one_field_per_option(self):
        from service.schemas import JobCreate

        assert set(JobCreate.model_fields) == OPTIONS

    def test_the_encode_form_has_one_field_per_option(self, app):
        spec = app.openapi()
        body = spec["paths"]["/encode"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        ref = body["$ref"].rsplit("/", 1)[-1]
        assert set(spec["components"]["schemas"][ref]["properties"]) == OPTIONS | {"file"}

    def test_every_option_reaches_the_job_payload(self, app, redis_conn):
        from api_helpers import submit
        from fastapi.testclient import TestClient

        with TestClient(app) as client:
            response = submit(client, **{k: str(v).lower() if isinstance(v, bool) else str(v)
                                         for k, v in EVERY_OPTION.items()})
            assert response.status_code == 202, response.text
            from rq.job import Job

            job = Job.fetch(response.json()["id"], connection=redis_conn, serializer="json")
            assert job.args[1] == validate_options(EVERY_OPTION).to_dict()


def test_sdk_form_carries_every_option():
    from metalic_client._base import encode_form

    stages = {k: v for k, v in EVERY_OPTION.items() if k not in ("target_bpp", "preset")}
    form = encode_form(EVERY_OPTION["target_bpp"], None, None, EVERY_OPTION["preset"], stages)
    from service.schemas import JobCreate

    assert JobCreate(**form).options() == EVERY_OPTION


def test_sdk_cli_has_a_flag_for_every_option():
    from metalic_client.cli import STAGE_OPTIONS, build_parser

    assert {"target_bpp", "lmbda", "target_psnr", "preset", *STAGE_OPTIONS} == OPTIONS
    encode = build_parser()._subparsers._group_actions[0].choices["encode"]
    dests = {a.dest for a in encode._actions}
    assert set(STAGE_OPTIONS) | {"bpp", "lmbda", "psnr", "preset"} <= dests
