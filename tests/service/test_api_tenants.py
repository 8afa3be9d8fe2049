"""Tenants that outlive their keys, and the per-key rate limit (real Redis, fake codec)."""

from __future__ import annotations

import pytest
from api_helpers import assert_problem, auth, submit
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def app_client(settings, fake_codec, **changes):
    return TestClient(create_app(settings.model_copy(update=changes), codec=fake_codec.FakeCodec()),
                      raise_server_exceptions=False)


class TestTenants:
    def test_a_rotated_key_keeps_seeing_its_tenants_jobs(self, settings, fake_codec):
        with app_client(settings, fake_codec, api_keys=["acme:old-key", "acme:new-key", "rival:their-key"]) as c:
            job_id = submit(c, key="old-key").json()["id"]
            assert c.get(f"/jobs/{job_id}", headers=auth("new-key")).status_code == 200
            assert_problem(c.get(f"/jobs/{job_id}", headers=auth("their-key")), 404, "job-not-found")
        # The old key is retired; the tenant's job is still there for the new one.
        with app_client(settings, fake_codec, api_keys=["acme:new-key"]) as c:
            assert c.get(f"/jobs/{job_id}", headers=auth("new-key")).json()["id"] == job_id
            assert_problem(c.get(f"/jobs/{job_id}", headers=auth("old-key")), 401, "invalid-api-key")

    def test_a_tenant_shares_one_quota_across_its_keys(self, settings, fake_codec):
        with app_client(settings, fake_codec, api_keys=["acme:k1", "acme:k2"], max_jobs_in_flight=2) as c:
            assert submit(c, key="k1").status_code == 202
            assert submit(c, key="k2").status_code == 202
            assert_problem(submit(c, key="k1"), 429, "too-many-jobs")

    def test_keys_without_a_tenant_are_their_own_tenant(self, settings):
        assert settings.credentials() == [(key, None) for key in settings.api_keys]

    @pytest.mark.parametrize("entry", ["bad tenant:key", ":key", "acme:", "é:key"])
    def test_malformed_tenant_entries_are_refused_at_startup(self, entry):
        with pytest.raises(ValueError):
            Settings(api_keys=[entry])


class TestRateLimit:
    def test_past_the_limit_429_with_retry_after(self, settings, fake_codec):
        with app_client(settings, fake_codec, rate_limit=5, rate_window=30) as c:
            answers = [c.get("/jobs/" + "0" * 32, headers=auth()) for _ in range(7)]
            assert [a.status_code for a in answers] == [404] * 5 + [429] * 2
            body = assert_problem(answers[-1], 429, "rate-limited")
            assert 1 <= int(answers[-1].headers["retry-after"]) <= 30
            assert "5 requests" in body["detail"]

    def test_the_limit_is_per_key(self, settings, fake_codec):
        from api_helpers import KEY_B

        with app_client(settings, fake_codec, rate_limit=2, rate_window=30) as c:
            for _ in range(3):
                c.get("/jobs/" + "0" * 32, headers=auth())
            assert c.get("/jobs/" + "0" * 32, headers=auth(KEY_B)).status_code == 404

    def test_unauthenticated_requests_do_not_spend_a_keys_budget(self, settings, fake_codec):
        with app_client(settings, fake_codec, rate_limit=2, rate_window=30) as c:
            for _ in range(5):
                c.get("/jobs/" + "0" * 32, headers=auth("wrong"))
            assert c.get("/jobs/" + "0" * 32, headers=auth()).status_code == 404
