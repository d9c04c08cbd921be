#!/usr/bin/env python3
"""Captures the request bodies that real kubectl sends for `kubectl create <generator>` and
`kubectl auth can-i` (protobuf for kubectl 1.32+), as upstream-produced test fixtures.

A throwaway HTTP listener on 127.0.0.1 serves recorded discovery documents from the reference
data and answers every write with a 500 Status after saving its body. Run:

    scripts/capture-kubectl-bodies.py ../shared/reference api-types/tests/fixtures/kubectl 1.32
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

REF, OUT, MINOR = sys.argv[1], sys.argv[2], sys.argv[3]
HTTP = os.path.join(REF, "upstream-v1.28.7", "http")


def load(name):
    with open(os.path.join(HTTP, name), "rb") as f:
        return f.read()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        accept = self.headers.get("Accept", "")
        if path == "/version":
            v = json.loads(load("version.json"))
            v.update(minor=MINOR, gitVersion=f"v1.{MINOR}.0")
            return self.reply(200, json.dumps(v).encode())
        if path in ("/api", "/apis") and "as=APIGroupDiscoveryList" in accept:
            doc = load("discovery-api-aggregated.json" if path == "/api" else "discovery-apis-aggregated.json")
            return self.reply(200, doc, "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
        files = {"/api": "api.json", "/apis": "apis.json", "/api/v1": "api-v1.json"}
        if path in files:
            return self.reply(200, load(files[path]))
        self.reply(404, b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}')

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        ctype = self.headers.get("Content-Type", "")
        ext = "pb" if "protobuf" in ctype else "json"
        name = self.path.split("?")[0].strip("/").replace("/", "_")
        with open(os.path.join(OUT, f"{CURRENT[0]}.{ext}"), "wb") as f:
            f.write(body)
        print(f"  {CURRENT[0]}: POST {self.path} {ctype} {n} bytes", file=sys.stderr)
        self.reply(500, b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"captured","code":500}')


CURRENT = ["none"]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}"
kubectl = os.path.join(os.path.dirname(os.path.realpath(shutil.which("kubectl"))), f"kubectl.1.{MINOR}")
commands = {
    "deployment": ["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=80", "-n", "default"],
    "namespace": ["create", "namespace", "team-a"],
    "configmap": ["create", "configmap", "cm1", "--from-literal=a=b", "--from-literal=c=d", "-n", "default"],
    "secret": ["create", "secret", "generic", "s1", "--from-literal=k=v", "-n", "default"],
    "service": ["create", "service", "clusterip", "svc1", "--tcp=80:8080", "-n", "default"],
    "job": ["create", "job", "j1", "--image=busybox", "-n", "default", "--", "echo", "hi"],
    "cronjob": ["create", "cronjob", "cj1", "--image=busybox", "--schedule=*/5 * * * *", "-n", "default"],
    "token": ["create", "token", "default", "-n", "default", "--duration=1h"],
    "can-i": ["auth", "can-i", "get", "pods", "-n", "default"],
}
for name, args in commands.items():
    CURRENT[0] = f"{name}-1.{MINOR}"
    subprocess.run([kubectl, f"--server={url}", "--insecure-skip-tls-verify", *args],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
server.shutdown()

# The same objects as kubectl prints them in JSON (client-side dry run): what each body decodes to.
for name, args in commands.items():
    if args[0] != "create" or name == "token":
        continue
    out = subprocess.run([kubectl, *args, "--dry-run=client", "-o", "json"],
                         capture_output=True, timeout=30, check=True).stdout
    with open(os.path.join(OUT, f"{name}-1.{MINOR}.expected.json"), "wb") as f:
        f.write(out)
