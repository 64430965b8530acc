"""Container health check: GET one URL, healthy on a 2xx answer within the timeout.

The URL is ``JOURNEY_HEALTHCHECK_URL``; by default the API's liveness route on ``API_PORT``.
The worker points it at its Temporal SDK metrics endpoint (``METRICS_PROMETHEUS_BIND``), which
is served by the SDK core for as long as the worker's runtime lives. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    """Exit status 0 when the URL answers 2xx, 1 otherwise (reason on stderr)."""
    url = os.environ.get("JOURNEY_HEALTHCHECK_URL") or (
        f"http://127.0.0.1:{os.environ.get('API_PORT', '8000')}/healthz"
    )
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            if 200 <= response.status < 300:
                return 0
            sys.stderr.write(f"unhealthy: {url} answered {response.status}\n")
    except (urllib.error.URLError, OSError) as err:
        sys.stderr.write(f"unhealthy: {url}: {err}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
