"""Open an HTML report in a real headless Chromium: it must load with no external request, and the
screenshot shows what a release engineer sees first.

    python scripts/check_html_report.py REPORT.html [--screenshot OUT.png]

Chromium comes from Debian's packages (``apt-get install -y chromium``). Every request the page
could make to another host goes through a proxy this script runs on loopback, which records it and
refuses it; the page itself must name no other file either (it is one self-contained file).
Exits 0 when both hold, 1 when not, 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


class _Recorder(socketserver.BaseRequestHandler):
    """A proxy that records the first line of every request and refuses it."""

    seen: list[str] = []

    def handle(self) -> None:
        line = self.request.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        if line:
            self.seen.append(line)
        self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")


def local_references(page: str) -> list[str]:
    """Every src/href/url() that is neither an anchor nor a data: URI (another file, or another host)."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)""", page)
    return [a or b for a, b in found if not (a or b).startswith(("#", "data:"))]


def _host(request_line: str) -> str:
    target = request_line.split(" ")[1] if " " in request_line else request_line
    return re.sub(r"^[a-z]+://", "", target).split("/")[0].split(":")[0]


def _load(browser: str, url: str, screenshot: Path) -> list[str]:
    """The requests Chromium made while loading ``url``, through the recording proxy."""
    _Recorder.seen = []
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Recorder) as proxy, tempfile.TemporaryDirectory() as profile:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-pings",
             "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--disable-default-apps",
             f"--user-data-dir={profile}", f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}",
             "--proxy-bypass-list=<-loopback>", "--window-size=1400,1000", "--hide-scrollbars",
             f"--screenshot={screenshot}", url],
            capture_output=True, timeout=120, check=False,
        )
        proxy.shutdown()
    return list(_Recorder.seen)


def check(report: Path, screenshot: Path) -> list[str]:
    """Problems found (empty: the page is self-contained and loads with no request)."""
    browser = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install -y chromium")
    problems = [f"the page refers to {ref}" for ref in local_references(report.read_text(encoding="utf-8"))]
    # Chromium calls its own services (time, updates, accounts) whatever it shows: what it asks for on a blank
    # page is the browser's, not the report's. The static check above already found no URL in the page.
    with tempfile.TemporaryDirectory() as scratch:
        own = {_host(line) for line in _load(browser, "about:blank", Path(scratch, "blank.png"))}
    problems += [f"the browser requested {line}" for line in _load(browser, report.resolve().as_uri(), screenshot)
                 if _host(line) not in own]
    if not screenshot.is_file() or screenshot.stat().st_size == 0:
        problems.append("Chromium wrote no screenshot")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=Path("report-screenshot.png"))
    args = parser.parse_args(argv)
    try:
        problems = check(args.report, args.screenshot)
    except FileNotFoundError as exc:
        print(f"check_html_report: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"check_html_report: {problem}", file=sys.stderr)
    print(f"{args.report}: {'self-contained, no request' if not problems else 'NOT self-contained'}; "
          f"screenshot: {args.screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
