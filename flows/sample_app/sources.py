"""Source text of the sample app's two stdlib-only services, so each commit of the sample repo is generated."""

from __future__ import annotations

__all__ = ["BACKEND_VARIANTS", "backend_source", "frontend_source", "readme_source"]

_SERVER_COMMON = '''
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RELEASE_FILE = Path(__file__).resolve().parent.parent / "RELEASE"


def release_sha():
    try:
        return RELEASE_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"


class BaseHandler(BaseHTTPRequestHandler):
    routes = {}

    def send_body(self, code, body, content_type="application/json"):
        data = (json.dumps(body) if content_type == "application/json" else body).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type + "; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_body(404, {"error": "not found", "path": self.path})
            return
        try:
            code, body, content_type = route(self)
        except Exception as exc:  # a broken endpoint answers 500 instead of dropping the connection
            self.send_body(500, {"error": "%s: %s" % (type(exc).__name__, exc)})
            return
        self.send_body(code, body, content_type)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\\n" % (self.address_string(), fmt % args))


def serve(handler, description, extra_args=()):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    for name in extra_args:
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    handler.args = args
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    sys.stderr.write("listening on %s:%d env=%s sha=%s\\n" % (args.host, args.port, args.env, release_sha()))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
'''

BACKEND_VARIANTS: dict[str, str] = {
    "normal": '''
def version_payload(env):
    return {"sha": release_sha(), "api": API_VERSION}
''',
    "build_info": '''
BUILD_INFO = {}  # filled in by CI (not wired up yet)


def version_payload(env):
    return {"sha": release_sha(), "api": API_VERSION, "build": BUILD_INFO["number"]}
''',
    "region": '''
REGION_BY_ENV = {"staging": "local-staging-1"}  # the production region is not configured yet


def version_payload(env):
    return {"sha": release_sha(), "api": API_VERSION, "region": REGION_BY_ENV[env]}
''',
}

_BACKEND_MAIN = '''

class Handler(BaseHandler):
    routes = {
        "/health": lambda h: (200, {"status": "ok"}, "application/json"),
        "/api/version": lambda h: (200, version_payload(h.args.env), "application/json"),
    }


if __name__ == "__main__":
    serve(Handler, "Sample backend service")
'''

_FRONTEND_MAIN = '''
import html
import urllib.request


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def backend_status(backend_url):
    status = {"sha": release_sha(), "backend_url": backend_url, "requires_backend_api": REQUIRES_BACKEND_API,
              "backend_api": None, "backend_sha": None, "backend_error": None, "backend_compatible": False}
    try:
        with OPENER.open(backend_url.rstrip("/") + "/api/version", timeout=2) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
        status["backend_api"] = payload["api"]
        status["backend_sha"] = payload["sha"]
        status["backend_compatible"] = int(payload["api"]) >= REQUIRES_BACKEND_API
    except Exception as exc:
        status["backend_error"] = "%s: %s" % (type(exc).__name__, exc)
    return status


def status_json(handler):
    status = backend_status(handler.args.backend_url)
    status["env"] = handler.args.env
    return 200, status, "application/json"


def index_page(handler):
    s = backend_status(handler.args.backend_url)
    rows = [("frontend sha", s["sha"]), ("env", handler.args.env), ("backend", s["backend_url"]),
            ("backend sha", s["backend_sha"]), ("backend api", s["backend_api"]),
            ("requires backend api", s["requires_backend_api"]),
            ("backend compatible", "yes" if s["backend_compatible"] else "no")]
    if s["backend_error"]:
        rows.append(("backend error", s["backend_error"]))
    items = "".join("<li>%s: %s</li>" % (html.escape(k), html.escape(str(v))) for k, v in rows)
    return 200, "<!doctype html><html><body><h1>Sample app</h1><ul>%s</ul></body></html>" % items, "text/html"


class Handler(BaseHandler):
    routes = {
        "/health": lambda h: (200, {"status": "ok"}, "application/json"),
        "/": index_page,
        "/api/status": status_json,
    }


if __name__ == "__main__":
    serve(Handler, "Sample frontend service", extra_args=("--backend-url",))
'''


def backend_source(api_version: int, variant: str = "normal") -> str:
    """Return backend/server.py for one commit: its API version and which version-endpoint variant it ships."""
    header = '"""Sample backend: /health and /api/version (stdlib only)."""\n'
    return header + _SERVER_COMMON + f"\nAPI_VERSION = {api_version}\n" + BACKEND_VARIANTS[variant] + _BACKEND_MAIN


def frontend_source(requires_backend_api: int) -> str:
    """Return frontend/server.py for one commit, declaring the minimum backend API version it needs."""
    header = '"""Sample frontend: /health, / (HTML) and /api/status (JSON) (stdlib only)."""\n'
    return header + _SERVER_COMMON + f"\nREQUIRES_BACKEND_API = {requires_backend_api}\n" + _FRONTEND_MAIN


def readme_source() -> str:
    """Return the sample repo's README, which says how to start each service."""
    return (
        "# Sample app\n\n"
        "Two stdlib-only services used by the deploy bot:\n\n"
        "    python backend/server.py --port 8001 --env staging\n"
        "    python frontend/server.py --port 8002 --env staging --backend-url http://127.0.0.1:8001\n\n"
        "A deploy writes the released commit SHA into a `RELEASE` file at the release root.\n"
    )
