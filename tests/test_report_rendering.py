"""Rendering saved JSON reports (tests/fixtures/report-v1.json, from a run of the tiny models)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miniature import MissingExtraError
from miniature.report.html import write_html
from miniature.report.json_report import read_json
from miniature.report.markdown import markdown_summary
from miniature.report.terminal import summary

FIXTURE = Path(__file__).parent / "fixtures" / "report-v1.json"


@pytest.fixture
def report() -> dict:
    return read_json(FIXTURE)


def test_terminal_tables_from_a_saved_report(report):
    lines = summary(report["results"])
    assert lines[0] == "prediction errors (paper section 3):"
    student = next(r for r in report["results"] if r["metric"] == "error_jaccard" and r["candidate"] == "student")
    row = next(line for line in lines if line.startswith("teacher") and "student" in line and "eval.csv" in line)
    assert f"{student['value']:.4f} [{student['interval'][0]:.3f}, {student['interval'][1]:.3f}]" in row
    assert row.endswith("FAIL (min 0.6)") == (not student["passed"])
    assert "data distribution, Deep-NN OOD sets (paper section 5):" in lines
    ood = next(r for r in report["results"] if r["metric"] == "ood_agreement")
    count = ood["reference_detection"]["flagged_count"]
    assert any(f"{count} ({count / ood['n']:.3f})" in line for line in lines)


def test_markdown_from_a_saved_report(report):
    markdown = markdown_summary(report["results"])
    failed = [r for r in report["results"] if r.get("threshold") is not None and not r["passed"]]
    assert f"**{len(failed)} of 6 gates failed**" in markdown
    assert markdown.count("### ") == 3 and "| reference | candidate | challenge |" in markdown


def test_html_report_is_one_file_with_the_verdict_first_and_its_figure_1_plots_inline(report, tmp_path: Path):
    import re

    page = write_html(report["results"], tmp_path / "report.html", report=report)
    text = page.read_text()
    assert '<span class="badge fail">FAIL</span>' in text and "3 of 6 gates failed" in text
    assert text.index("Verdict per candidate") < text.index("prediction errors")  # the verdict comes first
    assert text.count("<svg") == 2 and not list(tmp_path.glob("report_files*"))  # plots inline, nothing beside the page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", text)  # no external resource of any kind
    failed = [r for r in report["results"] if r.get("threshold") is not None and not r["passed"]]
    # Each failed gate's row, and each failing candidate's verdict row ("DO NOT SHIP").
    assert text.count('<tr class="fail">') == len(failed) + len({r["candidate"] for r in failed}) and len(failed) == 3
    assert text.count("DO NOT SHIP") == len({r["candidate"] for r in failed})
    for r in failed:  # each failing candidate says what failed and by how much
        assert f"{r['metric']} {r['value']:.4f} &lt; min {r['threshold']:g} (short by {r['threshold'] - r['value']:.4f})" in text


def test_the_html_report_names_the_extra_when_matplotlib_is_missing(report, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pytest-miniature\[html\]'"):
        write_html(report["results"], tmp_path / "r.html")


def test_miniature_report_cli_renders_all_three(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "miniature.cli", "report", str(FIXTURE), "--markdown",
                             str(tmp_path / "s.md"), "--html", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(": fail (3 of 6 gates failed)")
    assert (tmp_path / "s.md").is_file() and (tmp_path / "r.html").read_text().count("<svg") == 2
    assert json.loads(FIXTURE.read_text())["schema"] == "pytest-miniature/report"


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="needs Chromium (apt-get install -y chromium)")
def test_the_html_report_loads_in_a_real_browser_with_no_request(report, tmp_path: Path):
    """scripts/check_html_report.py: a recording proxy sees no request of the page's; the screenshot is taken."""
    page = write_html(report["results"], tmp_path / "report.html", report=report)
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_html_report.py"
    result = subprocess.run([sys.executable, str(script), str(page), "--screenshot", str(tmp_path / "shot.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://example.org/pixel.png"></body></html>')
    refused = subprocess.run([sys.executable, str(script), str(bad), "--screenshot", str(tmp_path / "bad.png")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "the browser requested GET http://example.org/pixel.png" in refused.stderr
