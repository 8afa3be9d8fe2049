"""Defaults of the SDK, each with its unit."""

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
"""URL of the service when neither ``base_url`` nor ``$METALIC_URL`` is given."""

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""Seconds. Per HTTP request: 60 s overall, 5 s to connect."""

DEFAULT_MAX_RETRIES = 4
"""Count. Retries after the first attempt, on connection errors, 429 and 5xx."""

INITIAL_RETRY_DELAY = 0.5
"""Seconds. Backoff before the first retry; doubles each time."""

MAX_RETRY_DELAY = 30.0
"""Seconds. Cap of the backoff and of an honoured ``Retry-After``."""

DEFAULT_POLL_INTERVAL = 0.5
"""Seconds between two ``GET /jobs/{id}`` while waiting for a job."""

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses always retried; a 409 is retried only when it carries ``Retry-After``."""

USER_AGENT = "metalic-client/0.1.0"
