"""A local receiver for the journey's outbound webhooks (docs/integrations.md).

    .venv/bin/python examples/webhook_receiver.py --secret whsec_... [--port 9000]

Verifies each delivery's Standard Webhooks signature with the ``standardwebhooks`` package,
drops a repeat of a ``webhook-id`` it already took (deliveries are at least once), prints one
line per event and answers 204 (401 for a bad signature, so the sender retries and an admin
sees it in the dead-letter list).
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret", required=True, help="the subscriber's whsec_... secret")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    webhook = Webhook(args.secret)
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                event: Any = webhook.verify(body, headers)
            except WebhookVerificationError as err:
                sys.stdout.write(f"refused: {err}\n")
                self.send_response(401)
            else:
                message_id = headers["webhook-id"]
                data = event["data"]
                note = " (repeat, ignored)" if message_id in seen else ""
                seen.add(message_id)
                sys.stdout.write(
                    f"{message_id} {event['type']} {data['journey_id']} "
                    f"#{data['sequence']}: {data['summary']}{note}\n"
                    + (json.dumps(data["details"]) + "\n" if data.get("details") else "")
                )
                self.send_response(204)
            sys.stdout.flush()
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    sys.stdout.write(f"listening on http://127.0.0.1:{args.port}/\n")
    sys.stdout.flush()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
