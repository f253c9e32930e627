"""Container health check: exit 0 when GET /prewarm/health answers 200, 1 otherwise.

Reads the port from PREWARM_LISTEN and the admin token from PREWARM_ADMIN_TOKEN (off loopback
/prewarm/health is an admin route). Standard library only: the slim image has no curl.
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("PREWARM_LISTEN", "0.0.0.0:11435").rpartition(":")[2]
token = os.environ.get("PREWARM_ADMIN_TOKEN", "")
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/prewarm/health",
    headers={"Authorization": f"Bearer {token}"} if token else {},
)
try:
    with urllib.request.urlopen(request, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except urllib.error.HTTPError as exc:  # 503: the body names the problems; docker inspect shows this line
    print(f"prewarm health {exc.code}: {exc.read(500).decode('utf-8', 'replace')}")
    sys.exit(1)
except OSError as exc:
    print(f"prewarm health: {exc}")
    sys.exit(1)
