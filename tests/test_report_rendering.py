"""Rendering saved JSON reports (tests/fixtures/report-v1.json, from a run of the tiny models)."""

from __future__ import annotations

import json
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


def test_html_report_with_its_figure_1_plots(report, tmp_path: Path):
    page = write_html(report["results"], tmp_path / "report.html", report=report)
    text = page.read_text()
    assert "<h1>pytest-miniature</h1>" in text and "<b>FAIL</b>: 3 of 6 gates failed" in text
    for name in ("figure-1ab-representation.png", "figure-1c-distribution.png"):
        image = tmp_path / "report_files" / name
        assert f'src="report_files/{name}"' in text
        assert image.stat().st_size > 5_000 and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count('class="fail"') == 3


def test_the_html_report_names_the_extra_when_matplotlib_is_missing(report, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pytest-miniature\[html\]'"):
        write_html(report["results"], tmp_path / "r.html")


def test_miniature_report_cli_renders_all_three(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "miniature.cli", "report", str(FIXTURE), "--markdown",
                             str(tmp_path / "s.md"), "--html", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(": fail (3 of 6 gates failed)")
    assert (tmp_path / "s.md").is_file() and (tmp_path / "r_files" / "figure-1c-distribution.png").stat().st_size > 0
    assert json.loads(FIXTURE.read_text())["schema"] == "pytest-miniature/report"
