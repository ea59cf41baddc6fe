#!/usr/bin/env python3
"""A webhook receiver outside Rust, for the system tests: verifies every POST with the
`standardwebhooks` package (PyPI; the reference implementation of the specification) and
records each verified delivery as one JSON line: {"id", "type", "event_id", "user_id"}.

Usage: webhook_receiver.py PORT SECRET_FILE RECORD_FILE CONTROL_FILE
- SECRET_FILE: the endpoint's secret (whsec_...), read at each request (the test writes it once
  the endpoint is registered; until then every request is answered 503).
- CONTROL_FILE: how to answer, read at each request: "ok" (200 once verified), "fail N"
  (500 for the next N requests, then 200), "redirect URL" (302 to URL, recording nothing), or "slow S" (S seconds before each answer). A delivery that fails verification gets 401 and is
  recorded as {"invalid": ...}.
Prints "listening" once bound; stops when its parent kills it."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port, secret_file, record_file, control_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
failures_left = {"n": None}


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def record(entry):
    with open(record_file, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        secret = read(secret_file)
        if not secret:
            return self.answer(503)
        control = read(control_file).split()
        if control and control[0] == "redirect":
            self.send_response(302)
            self.send_header("location", control[1])
            self.send_header("content-length", "0")
            return self.end_headers()
        if control and control[0] == "slow":
            time.sleep(float(control[1]))
        if control and control[0] == "fail":
            if failures_left["n"] is None:
                failures_left["n"] = int(control[1])
            if failures_left["n"] > 0:
                failures_left["n"] -= 1
                return self.answer(500)
        try:
            event = Webhook(secret).verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            record({"invalid": str(e), "id": self.headers.get("webhook-id")})
            return self.answer(401)
        data = event.get("data", {})
        record({"id": self.headers["webhook-id"], "type": event["type"], "event_id": event["event_id"],
                "user_id": data.get("user_id")})
        self.answer(200)

    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(port)), Receiver)
print("listening", flush=True)
server.serve_forever()
