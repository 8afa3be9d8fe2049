"""Settings (service/config.py): every limit documented with the status it gives; limits the codec cannot honour refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from codec.image import PIXEL_CEILING
from service.config import Settings
from worker.config import WorkerSettings

SERVICE_DOC = Path(__file__).resolve().parents[2] / "docs" / "SERVICE.md"

LIMITS = {
    "max_upload_bytes": "413", "max_bitstream_bytes": "413", "max_pixels": "413", "probe_concurrency": "503",
    "probe_queue": "503", "decode_concurrency": "503", "decode_queue": "503", "max_jobs_in_flight": "429",
    "job_timeout": "job-timeout", "model": "422",
}
"""Setting -> what a request past it gets, as the settings table of docs/SERVICE.md must say."""


def _table_rows() -> list[str]:
    text = SERVICE_DOC.read_text()
    start = text.index("## Settings (environment)")
    end = text.find("\n## ", start + 1)
    table = text[start:end if end >= 0 else len(text)]
    return [line for line in table.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("name, status", sorted(LIMITS.items()))
def test_every_limit_is_in_the_settings_table_with_what_it_gives(name, status):
    assert name in Settings.model_fields
    env = f"METALIC_{name.upper()}"
    rows = [row for row in _table_rows() if re.search(rf"`{env}`", row)]
    assert rows, f"{env} is not in the settings table of docs/SERVICE.md"
    assert status in rows[0].split("|")[-2], rows[0]


def test_the_limits_both_processes_read_have_one_default():
    api, worker = Settings(api_keys=["k"]), WorkerSettings()
    assert (api.max_pixels, api.model, api.queue) == (worker.max_pixels, worker.model, worker.queue)


@pytest.mark.parametrize("settings_class", [Settings, WorkerSettings])
def test_a_pixel_limit_past_pillows_ceiling_is_refused_at_start_up(settings_class):
    with pytest.raises(ValidationError):
        settings_class(api_keys=["k"], max_pixels=PIXEL_CEILING + 1)
    assert settings_class(api_keys=["k"], max_pixels=PIXEL_CEILING).max_pixels == PIXEL_CEILING
