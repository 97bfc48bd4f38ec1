"""A verdict you can trust: every bad input or fault of docs/reliability.md, driven as a user meets it.

Each test failed before its fix (the issue that listed them reproduced each one).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss  # noqa: F401  (imported once in the outer process: pytester's inline runs unload what they import)
import numpy as np
import onnx
import pytest
from loading import load
from onnx import TensorProto, helper, numpy_helper

CLI = [sys.executable, "-m", "miniature.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600, input=stdin)


def compare(tiny_models, candidate: str, cwd: Path, *extra: str, eval_csv: Path | None = None) -> subprocess.CompletedProcess:
    return run(*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", candidate,
               "--eval", str(eval_csv or tiny_models.eval_csv), *extra, cwd=cwd)


def copy_onnx(tiny_models, out: Path) -> Path:
    """The teacher's fp32 ONNX export with its tokenizer, in a folder of the test's own."""
    shutil.copytree(tiny_models.onnx.parent, out)
    return out / "model.onnx"


def poison(model_file: Path, output: str) -> None:
    """Multiply graph output ``output`` by NaN: an export that computes garbage but runs."""
    model = onnx.load(str(model_file))
    for node in model.graph.node:  # what the graph computes reads the raw tensor; only the output is poisoned
        node.output[:] = [f"{output}_raw" if o == output else o for o in node.output]
        node.input[:] = [f"{output}_raw" if i == output else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan"))
    model.graph.node.append(helper.make_node("Mul", [f"{output}_raw", "nan"], [output]))
    onnx.save(model, str(model_file))


# 1 -------------------------------------------------------------------------------------------------


def test_an_onnx_model_changed_in_its_external_weights_is_recomputed_not_read_from_cache(tiny_models, tmp_path):
    model_file = copy_onnx(tiny_models, tmp_path / "ext")
    model = onnx.load(str(model_file))
    onnx.save_model(model, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    spec, args = f"onnx:{model_file}", ("--threshold", "error_jaccard=0.99", "--cache-dir", "cache")
    first = compare(tiny_models, spec, tmp_path, *args)
    assert first.returncode == 0, first.stderr + first.stdout  # the fp32 export makes the teacher's errors
    # Change the classifier's weights in place: the same size, the same file names.
    model = onnx.load(str(model_file))
    for tensor in model.graph.initializer:
        if tensor.name.startswith("model.classifier") or "classifier" in tensor.name:
            flipped = -numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(flipped, tensor.name))
    size = (model_file.parent / "weights.bin").stat().st_size
    (model_file.parent / "weights.bin").unlink()  # onnx appends to an existing file
    onnx.save_model(model, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (model_file.parent / "weights.bin").stat().st_size == size
    second = compare(tiny_models, spec, tmp_path, *args)
    assert "model outputs: 1 computed" in second.stdout  # the changed candidate ran again; the teacher came from cache
    assert second.returncode == 1 and "FAILED" in second.stdout  # flipped logits: a different error set


# 2 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "check", "what"), [("logits", "error_jaccard", "logits"),
                                                         ("last_hidden_state", "knn_agreement", "hidden states")])
def test_non_finite_outputs_are_a_model_error_never_a_value(tiny_models, tmp_path, output, check, what):
    model_file = copy_onnx(tiny_models, tmp_path / "nan")
    poison(model_file, output)
    result = compare(tiny_models, f"onnx:{model_file}", tmp_path, "--threshold", f"{check}=0.3", "--no-cache")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"computed non-finite {what}" in result.stderr and "for 200 of the 200 points" in result.stderr


# 3 -------------------------------------------------------------------------------------------------


def test_another_projects_configuration_is_never_applied(pytester, tiny_models, tmp_path_factory):
    other = tmp_path_factory.mktemp("other-project")
    shutil.copytree(tiny_models.teacher, other / "models" / "ref")
    (other / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.miniature]
        cache_dir = "their-cache"
        [tool.miniature.thresholds]
        error_jaccard = 0.99
        knn_agreement = 0.99
    """))
    pytester.makepyfile("""
        from miniature import assert_error_jaccard

        def test_errors(reference, candidate, eval_set):
            assert_error_jaccard(reference, candidate, eval_set, min=0.0)
    """)
    result = pytester.runpytest("--reference", str(other / "models" / "ref"), "--candidate", str(tiny_models.student),
                                "--miniature-eval", str(tiny_models.eval_csv), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)  # no gate of theirs was collected
    result.stdout.fnmatch_lines(["miniature: config none"])
    assert not (other / "their-cache").exists()


# 4 -------------------------------------------------------------------------------------------------


def test_a_models_own_code_never_runs_unless_the_user_opts_in(tiny_models, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(tiny_models.teacher, evil)
    marker = tmp_path / "code-ran"
    config = json.loads((evil / "config.json").read_text())
    config.update(model_type="evil-bert", architectures=["EvilForSequenceClassification"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"})
    (evil / "config.json").write_text(json.dumps(config))
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    result = run(*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(evil), "--eval",
                 str(tiny_models.eval_csv), "--no-cache", cwd=tmp_path, stdin="y\n" * 20)
    assert result.returncode == 3 and "trust_remote_code" in result.stderr, result.stderr
    assert not marker.exists()


def test_a_model_spec_opts_in_to_its_own_code_with_trust_remote_code(tiny_models, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(tiny_models.teacher, evil)
    marker = tmp_path / "code-ran"
    config = json.loads((evil / "config.json").read_text())
    config.update(model_type="evil-bert", auto_map={"AutoConfig": "evil.EvilConfig"})
    (evil / "config.json").write_text(json.dumps(config))
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for value in ("false", "FALSE"):
        refused = compare(tiny_models, f"{evil}?trust_remote_code={value}", tmp_path, "--no-cache")
        assert refused.returncode == 3 and "trust_remote_code" in refused.stderr and not marker.exists(), refused.stderr
    bad = compare(tiny_models, f"{evil}?trust_remote_code=yes please", tmp_path, "--no-cache")
    assert bad.returncode == 2 and "Expected trust_remote_code=true|false in model spec" in bad.stderr, bad.stderr
    trusted = compare(tiny_models, f"{evil}?trust_remote_code=true", tmp_path, "--no-cache")
    assert marker.exists(), trusted.stderr  # its own code ran (and then failed: evil.py defines no EvilConfig)


# 5 -------------------------------------------------------------------------------------------------


def test_broken_models_exit_three_with_one_line(tiny_models, tmp_path):
    onnx_file = f"onnx:{tiny_models.onnx}"
    as_logits = compare(tiny_models, f"{onnx_file}?output=last_hidden_state", tmp_path, "--no-cache")
    assert as_logits.returncode == 3 and "output must be a float (batch, labels) output" in as_logits.stderr
    assert "did you mean ?hidden=last_hidden_state?" in as_logits.stderr
    for content, said in (("{not json", "is not readable JSON"), ("[]", "expected a JSON object")):
        broken = tmp_path / f"broken-{len(content)}"
        shutil.copytree(tiny_models.student, broken)
        (broken / "config.json").write_text(content)
        result = compare(tiny_models, str(broken), tmp_path, "--no-cache")
        assert result.returncode == 3 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_tokenizer_with_tokens_the_model_lacks_is_named(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    grown = tmp_path / "grown"
    shutil.copytree(tiny_models.student, grown)
    tokenizer = AutoTokenizer.from_pretrained(grown)
    tokenizer.add_tokens(["zorblax", "quuxly"])
    tokenizer.save_pretrained(grown)
    data = tmp_path / "eval.csv"
    data.write_text("text,label\nzorblax quuxly film,positive\nawful film,negative\n")
    result = compare(tiny_models, str(grown), tmp_path, "--no-cache", eval_csv=data)
    assert result.returncode == 3 and "the model's vocabulary has 30522 entries" in result.stderr, result.stderr


@pytest.mark.parametrize(("toml", "message"), [
    ("cache_dir = 5", "Expected cache_dir in [tool.miniature]"),
    ("cache_dir = true", "Expected cache_dir in [tool.miniature]"),
    ("label_map = { good = 1.5 }", "Expected label_map's 'good'"),
    ("label_map = { good = [1] }", "Expected label_map's 'good'"),
    ("cache_dir = 'afile/cache'", "The cache folder"),
])
def test_bad_settings_exit_two_before_any_model_runs(tiny_models, tmp_path, toml, message):
    (tmp_path / "afile").write_text("a file where a folder should be")
    (tmp_path / "pyproject.toml").write_text(f"[tool.miniature]\n{toml}\n")
    result = compare(tiny_models, str(tiny_models.student), tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_bound_outside_its_characteristics_range_is_a_usage_error(tiny_models, tmp_path):
    from miniature.characteristics import registry

    said = "must be a number in the range [0, inf). Got -1"
    on_the_line = compare(tiny_models, str(tiny_models.student), tmp_path, "--threshold", "kl_divergence=-1")
    assert on_the_line.returncode == 2 and f"The 'kl_divergence.max' parameter of --threshold {said}" in on_the_line.stderr
    (tmp_path / "pyproject.toml").write_text("[tool.miniature.thresholds]\nkl_divergence = { max = -1 }\n")
    configured = compare(tiny_models, str(tiny_models.student), tmp_path)
    assert configured.returncode == 2, configured.stderr
    assert f"The 'kl_divergence.max' parameter of [tool.miniature.thresholds] {said}" in configured.stderr
    # A divergence of 0 is a bound it can meet; a negative maximum gap of the attack check stays meaningful.
    assert registry.get("kl_divergence").parse_threshold(0).value == 0.0
    assert registry.get("attack_robustness").parse_threshold(-5).value == -5.0


def test_bad_settings_are_pytest_usage_errors_and_data_problems_are_errors(pytester, tiny_models):
    pytester.makepyprojecttoml("[tool.miniature]\ncache_dir = 5")
    assert pytester.runpytest().ret == pytest.ExitCode.USAGE_ERROR
    pytester.path.joinpath("afile").write_text("x")
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}"]
eval = "{tiny_models.eval_csv}"
cache_dir = "afile/cache"
[tool.miniature.thresholds]
error_jaccard = 0.0
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=j.xml")
    result.assert_outcomes(errors=1)  # an unusable cache folder is an error, not a failed gate
    assert "<error" in pytester.path.joinpath("j.xml").read_text()


def _without_root_override() -> None:
    """In the child (as root): drop the capabilities that let root write where permissions say no, across exec."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set (PR_CAPBSET_DROP)
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_cache_is_read_and_never_written(tiny_models, tmp_path):
    args = ("--threshold", "error_jaccard=0.0", "--cache-dir", "cache")
    assert compare(tiny_models, str(tiny_models.student), tmp_path, *args).returncode == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*"))
    for path in (tmp_path / "cache", *(tmp_path / "cache").rglob("*")):
        path.chmod(path.stat().st_mode & ~0o222)
    preexec = _without_root_override if os.geteuid() == 0 else None
    probe = subprocess.run([sys.executable, "-c", "open('cache/probe', 'w')"], cwd=tmp_path, preexec_fn=preexec,
                           capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this process can write to a read-only folder (root with CAP_DAC_OVERRIDE it could not drop)")
    # One candidate's outputs are in the cache, the other's are not: used, and computed without being written.
    result = subprocess.run([*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate",
                             str(tiny_models.student), "--candidate", f"onnx:{tiny_models.onnx}", "--eval",
                             str(tiny_models.eval_csv), *args], capture_output=True, text=True, cwd=tmp_path, env=ENV,
                            timeout=600, preexec_fn=preexec)
    assert result.returncode == 0, result.stderr
    assert "model outputs: 1 computed" in result.stdout and "2 from cache" in result.stdout, result.stdout
    assert result.stderr.count("will not be cached") == 1 and "not writable" in result.stderr, result.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*")) == before


def test_outputs_that_cannot_be_written_lose_nothing(tiny_models, tmp_path):
    (tmp_path / "adir").mkdir()
    result = compare(tiny_models, str(tiny_models.student), tmp_path, "--report", "adir", "--markdown", "new/dir/s.md",
                     "--no-cache")
    assert result.returncode == 0 and "JSON report not written: IsADirectoryError" in result.stdout
    assert (tmp_path / "new" / "dir" / "s.md").is_file() and "prediction errors" in result.stdout
    saved = compare(tiny_models, str(tiny_models.student), tmp_path, "--report", "r.json", "--no-cache")
    assert saved.returncode == 0
    rendered = run(*CLI, "report", "r.json", "--markdown", "fresh/dir/s.md", cwd=tmp_path)
    assert rendered.returncode == 0 and (tmp_path / "fresh" / "dir" / "s.md").is_file()


def test_an_internal_error_exits_four_with_one_line_and_the_traceback_in_a_file(monkeypatch, capsys):
    from miniature import cli

    def broken(args):
        raise RuntimeError("something the authors did not foresee")

    monkeypatch.setattr(cli, "run_report", broken)
    assert cli.main(["report", "r.json"]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error: RuntimeError: something the authors did not foresee" in err
    saved = Path(err.split("the traceback is in ")[1].split(";")[0])
    assert "Traceback" in saved.read_text() and "run_report" not in err


@pytest.mark.parametrize(("case", "code", "kind"), [("model", 3, "model"), ("cannot apply", 3, "model"),
                                                    ("usage", 2, "usage"), ("data", 3, "data")])
def test_a_run_that_ends_in_an_error_writes_every_report_with_the_error(tiny_models, tmp_path, case, code, kind):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.student, broken)
    (broken / "config.json").write_text("[]")
    (tmp_path / "texts.csv").write_text("text\na good film\na bad film\n")
    logits_only = tmp_path / "logits-only"
    if case == "cannot apply":  # an ONNX export without hidden states, asked for the KNN check by name
        from miniature.compress import export_onnx

        logits_only = export_onnx(tiny_models.teacher, tmp_path / "logits-only", hidden_states=False)
    check, args = {"model": ("error_jaccard", ("--candidate", str(broken), "--eval", str(tiny_models.eval_csv))),
                   "cannot apply": ("knn_agreement", ("--candidate", f"onnx:{logits_only}", "--eval",
                                                      str(tiny_models.eval_csv))),
                   "usage": ("ood_agreement", ("--ood", "texts.csv")),  # and no --train
                   "data": ("error_jaccard", ("--eval", "texts.csv"))}[case]  # no labels
    # With a broken model, the student's check runs first; then the run ends in the error.
    result = run(*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student), *args,
                 "--checks", check, "--no-cache", "--report", "out/r.json", "--html", "out/r.html", "--markdown",
                 "out/s.md", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    [said] = result.stderr.strip().splitlines()
    message = said.removeprefix("miniature: error: ")
    report = json.loads((tmp_path / "out" / "r.json").read_text())
    name = {"model": "broken", "cannot apply": "logits-only/model.onnx"}.get(case, "student")
    assert report["errors"] == [{"check": check, "candidate": name, "kind": kind, "message": message}]
    assert report["exit_status"] == code and report["verdict"] == "fail"
    if case in ("model", "cannot apply"):  # what ran before the error is in the report too
        assert [(r["metric"], r["candidate"]) for r in report["results"]] == [(check, "student")]
    page = (tmp_path / "out" / "r.html").read_text()
    assert '<span class="badge fail">ERROR</span>' in page and page.index(html.escape(message)) < page.index("Verdict per")
    markdown = (tmp_path / "out" / "s.md").read_text()
    assert "**the run ended in an error**" in markdown.splitlines()[2] and html.escape(message) in markdown


def test_errors_of_configured_checks_assert_calls_and_fixtures_reach_the_report(pytester, tiny_models, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.student, broken)
    (broken / "config.json").write_text("[]")
    (tmp_path / "bank.csv").write_text("words\nno text column here\n")
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{broken}"]
eval = "{tiny_models.eval_csv}"
train = "{tmp_path / 'bank.csv'}"
cache_dir = ""
[tool.miniature.thresholds]
error_jaccard = 0.0
""")
    pytester.makepyfile("""
        from miniature import assert_kl_divergence

        def test_drift(reference, candidate, eval_set):
            assert_kl_divergence(reference, candidate, eval_set, max=1.0)

        def test_bank(train_set):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--miniature-report", "r.json", "--miniature-html", "r.html")
    result.assert_outcomes(errors=3)
    errors = json.loads((pytester.path / "r.json").read_text())["errors"]
    assert [(e["check"], e["candidate"], e["kind"]) for e in errors] == [
        ("error_jaccard", "broken", "model"), ("kl_divergence", "broken", "model"), (None, None, "data")]
    assert "expected a JSON object" in errors[0]["message"] and "has no text column" in errors[2]["message"]
    assert "ERROR" in (pytester.path / "r.html").read_text()


def _processes_of_session(sid: int) -> list[str]:
    """The command lines of the processes still in session ``sid`` (Linux /proc)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    return alive


@pytest.mark.xdist_group("ray")
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_ctrl_c_exits_130_with_one_line_and_leaves_nothing_running(tiny_models, tmp_path, engine):
    import signal
    import time

    if engine == "ray":
        pytest.importorskip("ray")
    rows = tiny_models.eval_csv.read_text().splitlines()
    (tmp_path / "big.csv").write_text("\n".join([rows[0], *rows[1:] * 50]) + "\n")  # 10,000 points: minutes at batch 2
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}  # a Ray of its own, started and stopped by the command
    command = subprocess.Popen([*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate",
                                str(tiny_models.student), "--eval", "big.csv", "--checks", "error_jaccard", "--batch-size",
                                "2", "--cache-dir", "cache", "--engine", engine], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               # a suite started in the background of a script inherits SIGINT ignored, and so would the
                               # command (Python installs its Ctrl-C handler only where SIGINT is not ignored)
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "cache").glob("locks/*.lock")) and command.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the lock is taken just before the reference runs
        time.sleep(3)
        assert command.poll() is None, command.communicate()
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    assert command.returncode == 130, err
    assert err.strip().splitlines()[-1] == "miniature: interrupted" and "Traceback" not in err, err
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".tmp-")]  # no half-written entry
    deadline = time.monotonic() + 30
    while (left := _processes_of_session(command.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)  # Ray's processes stop as the command exits
    assert not left, left


@pytest.mark.xdist_group("ray")
def test_an_unreachable_ray_cluster_is_a_model_error_naming_ray_address_within_the_connect_timeout(tiny_models, tmp_path):
    import socket
    import time

    pytest.importorskip("ray")
    (tmp_path / "pyproject.toml").write_text('[tool.miniature]\nengine = "ray"\nray_connect_timeout = 3\n')
    silent = socket.create_server(("0.0.0.0", 0))  # accepts connections (the kernel does) and never answers
    with silent:
        for address, said in (("127.0.0.1:1", "cannot be reached"), (f"127.0.0.1:{silent.getsockname()[1]}",
                                                                      "did not answer within 3 s")):
            start = time.monotonic()
            result = subprocess.run([*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate",
                                     str(tiny_models.student), "--eval", str(tiny_models.eval_csv), "--no-cache"],
                                    capture_output=True, text=True, cwd=tmp_path, env={**ENV, "RAY_ADDRESS": address},
                                    timeout=300)
            assert result.returncode == 3, result.stderr
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("miniature: error: ") and f"RAY_ADDRESS={address}" in last and said in last, last
            assert "Traceback" not in result.stderr and time.monotonic() - start < 40
    bad = subprocess.run([*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
                          "--eval", str(tiny_models.eval_csv), "--ray-connect-timeout", "0"], capture_output=True,
                         text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert bad.returncode == 2 and "--ray-connect-timeout" in bad.stderr, bad.stderr


@pytest.mark.xdist_group("ray")
def test_an_empty_ray_address_runs_a_local_ray_whose_actor_errors_read_as_the_local_engines(tiny_models, tmp_path):
    pytest.importorskip("ray")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.teacher, broken)
    (broken / "model.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{not json at all")  # fails where weights load
    args = ("--checks", "error_jaccard", "--no-cache")
    local = compare(tiny_models, str(broken), tmp_path, *args)
    assert local.returncode == 3, local.stderr
    [said] = local.stderr.strip().splitlines()
    # CI systems export unset variables as empty: no cluster, so a local Ray (it was an internal error, exit 4).
    on_ray = subprocess.run([*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(broken),
                             "--eval", str(tiny_models.eval_csv), *args, "--engine", "ray"], capture_output=True,
                            text=True, cwd=tmp_path, env={**ENV, "RAY_ADDRESS": ""}, timeout=600)
    assert on_ray.returncode == 3, on_ray.stderr
    assert "\x1b" not in on_ray.stderr and "Traceback" not in on_ray.stderr, on_ray.stderr
    [line] = [line for line in on_ray.stderr.splitlines() if line.startswith("miniature:")]
    assert line.startswith(said + " (the actor's traceback is in "), (line, said)
    saved = Path(line.split("the actor's traceback is in ")[1].rstrip(")"))
    assert "ModelLoadError" in saved.read_text() and "\x1b" not in saved.read_text()


# 6 -------------------------------------------------------------------------------------------------

CONCURRENT = """
import sys, warnings
import numpy as np
from miniature.cache import OutputCache
from miniature.outputs import ModelOutputs
warnings.simplefilter("ignore")
cache = OutputCache(sys.argv[1])
keys = [f"{i:02d}" + "0" * 62 for i in range(12)]
for round_ in range(40):
    for key in keys:
        cache.get(key)
        cache.put(key, ModelOutputs(logits=np.ones((3, 2), np.float32), cls=None), {"n": 3})
        if round_ % 3 == 0:
            cache.path(key).write_bytes(b"corrupt")
"""


def test_concurrent_runs_over_one_cache_with_corrupt_entries_never_fail(tmp_path):
    from miniature.cache import OutputCache

    cache = OutputCache(tmp_path / "cache")
    for i in range(12):
        path = cache.path(f"{i:02d}" + "0" * 62)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"corrupt")
    script = tmp_path / "hammer.py"
    script.write_text(CONCURRENT)
    runs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0, 0, 0], errors


# 7 -------------------------------------------------------------------------------------------------


def sentence_transformers_like(path: Path, outputs: list[tuple[str, int, list]], *, hidden: int = 384) -> Path:
    """A graph with the outputs of a third-party sentence-transformers export: int64 token ids and lengths,
    a float (batch, seq, hidden) and a float (batch, hidden), computed from the inputs."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    weight = numpy_helper.from_array(np.linspace(0.1, 1.0, hidden, dtype=np.float32).reshape(1, 1, hidden), "w")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    sum_axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "sum_axes")
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_f", "axes"], ["ids_3d"]),
        helper.make_node("Mul", ["ids_3d", "w"], ["_tokens"]),
        helper.make_node("ReduceMean", ["_tokens"], ["_pooled"], axes=[1], keepdims=0),
        helper.make_node("Identity", ["input_ids"], ["_token_ids"]),
        helper.make_node("ReduceSum", ["attention_mask", "sum_axes"], ["_lengths"], keepdims=0),
    ]
    produced = {"token_ids": ("_token_ids", TensorProto.INT64), "lengths": ("_lengths", TensorProto.INT64),
                "tokens": ("_tokens", TensorProto.FLOAT), "pooled": ("_pooled", TensorProto.FLOAT)}
    graph_outputs = []
    for name, source, shape in outputs:
        nodes.append(helper.make_node("Identity", [produced[source][0]], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, produced[source][1], shape))
    graph = helper.make_graph(nodes, "st", [ids, mask], graph_outputs, initializer=[weight, axes, sum_axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    return path / "model.onnx"


def tokenizer_beside(tiny_models, folder: Path, *, classifier: bool) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_models.teacher).save_pretrained(folder)
    config = json.loads((tiny_models.teacher / "config.json").read_text())
    if not classifier:
        for key in ("architectures", "id2label", "label2id"):
            config.pop(key, None)
        config["architectures"] = ["BertModel"]
    (folder / "config.json").write_text(json.dumps(config))


def test_onnx_outputs_are_chosen_by_dtype_and_shape_not_rank_alone(tiny_models, tmp_path):
    from miniature.models import open_backend, parse_model_spec

    path = sentence_transformers_like(tmp_path / "st", [("output", "token_ids", ["batch", "seq"]),
                                                        ("463", "lengths", ["batch"]),
                                                        ("1320", "tokens", ["batch", "seq", 384]),
                                                        ("1321", "pooled", ["batch", 384])])
    tokenizer_beside(tiny_models, path.parent, classifier=False)
    backend = open_backend(parse_model_spec(f"onnx:{path}"))
    load(backend)
    assert (backend.head, backend.hidden_name) == (None, "1320")  # int64 outputs and the pooled vector are no logits
    outputs = backend.run(["a good film", "a bad one"], batch_size=2, max_length=32)
    assert outputs.logits is None and outputs.cls.shape == (2, 384)
    # The gate says what applies: KNN runs on it, the prediction-error check is not applicable.
    result = compare(tiny_models, f"onnx:{path}", tmp_path, "--no-cache")
    assert result.returncode == 0, result.stderr
    assert "not applicable: error_jaccard of " in result.stdout and "data representation" in result.stdout, result.stdout


def test_ambiguous_onnx_outputs_name_every_output_and_the_fix(tiny_models, tmp_path):
    from miniature.errors import ModelLoadError
    from miniature.models import open_backend, parse_model_spec

    path = sentence_transformers_like(tmp_path / "two", [("a", "tokens", ["batch", "seq", 384]),
                                                         ("b", "tokens", ["batch", "seq", 384])])
    tokenizer_beside(tiny_models, path.parent, classifier=False)
    backend = open_backend(parse_model_spec(f"onnx:{path}"))
    with pytest.raises(ModelLoadError, match=r"several outputs could be the last_hidden_state \(a, b\).*0: a float "
                                             r"\['batch', 'seq', 384\].*\?hidden=<name or index>"):
        load(backend)
    chosen = open_backend(parse_model_spec(f"onnx:{path}?hidden=b"))
    load(chosen)
    assert chosen.hidden_name == "b"


def test_a_classifier_export_with_extra_float_outputs_uses_the_one_of_its_label_count(tiny_models, tmp_path):
    from miniature.models import open_backend, parse_model_spec

    # "scores" (batch, 2) matches config.json's two labels; "pooled" (batch, 384) cannot be its logits.
    path = sentence_transformers_like(tmp_path / "clf", [("pooled", "pooled", ["batch", 384]),
                                                         ("tokens", "tokens", ["batch", "seq", 384])])
    tokenizer_beside(tiny_models, path.parent, classifier=True)
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((384, 2), np.float32), "head"))
    model.graph.node.append(helper.make_node("MatMul", ["pooled", "head"], ["scores"]))
    model.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2]))
    onnx.save(model, str(path))
    backend = open_backend(parse_model_spec(f"onnx:{path}"))
    load(backend)
    assert backend.head == {"logits": "scores"} and backend.hidden_name == "tokens"


# 8 -------------------------------------------------------------------------------------------------


def test_a_stray_quote_that_merges_rows_is_reported(tmp_path):
    from miniature.data import load_eval_set, parse_dataset_spec
    from miniature.errors import DataWarning

    rows = [f"review number {i}\t{i % 2}" for i in range(40)]
    rows[5] = '"great film\t1'  # the quote opens a field that swallows the rows after it
    (tmp_path / "reviews.tsv").write_text("text\tlabel\n" + "\n".join(rows) + '\nand then" it ends\t0\n')
    with pytest.warns(DataWarning, match=r"42 non-empty lines \(a header and 41 rows expected\) parsed into \d+ rows.*"
                                         r"\?quoting=none"):
        merged = load_eval_set(parse_dataset_spec(str(tmp_path / "reviews.tsv")))
    assert len(merged) < 41
    literal = load_eval_set(parse_dataset_spec(f"{tmp_path / 'reviews.tsv'}?quoting=none"))
    assert len(literal) == 41


@pytest.mark.parametrize(("header", "option", "expected"), [
    (True, "", "41 non-empty lines (a header and 40 rows expected) parsed into 38 rows"),
    (False, "?header=none&text=0&label=1", "40 non-empty lines (40 rows expected) parsed into 38 rows"),
])
def test_the_merged_rows_warning_counts_rows_like_for_like(tmp_path, header, option, expected):
    from miniature.data import load_eval_set, parse_dataset_spec
    from miniature.errors import DataWarning

    rows = [f"review number {i},{i % 2}" for i in range(40)]
    rows[10] = '"opens a quote,1'  # swallows rows 11 and 12 into one field ...
    rows[12] = 'closes here",0'  # ... closed two rows later: 40 rows read as 38
    (tmp_path / "r.csv").write_text(("text,label\n" if header else "") + "\n".join(rows) + "\n")
    with pytest.warns(DataWarning) as caught:
        data = load_eval_set(parse_dataset_spec(f"{tmp_path / 'r.csv'}{option}"))
    assert len(data) == 38
    assert [expected in str(w.message) for w in caught] == [True], [str(w.message) for w in caught]


@pytest.mark.parametrize(("choices", "repeated"), [("good|bad|good", "'good'"), ('"["" yes"", ""no"", ""yes""]"', "' yes'")])
def test_a_multiple_choice_row_with_a_repeated_choice_is_a_data_error(tmp_path, choices, repeated):
    from miniature.data import load_eval_set, parse_dataset_spec
    from miniature.errors import DatasetError

    (tmp_path / "mc.csv").write_text(f"context,choices,label\na film,bad|good,1\nanother film,{choices},0\n")
    with pytest.raises(DatasetError, match=rf"row 1 has the choice {repeated} more than once .*choices column 'choices'"):
        load_eval_set(parse_dataset_spec(str(tmp_path / "mc.csv")))


def test_a_max_length_that_leaves_no_room_for_text_is_refused(tiny_models, tmp_path):
    result = compare(tiny_models, str(tiny_models.student), tmp_path, "--max-length", "2", "--no-cache")
    assert result.returncode == 2 and "max_length 2 leaves no room for text" in result.stderr
    assert "adds 2 special tokens" in result.stderr


# 9 -------------------------------------------------------------------------------------------------

HOSTILE = '<img src=x onerror=alert(1)><script>alert(2)</script>\x1b[31m'


def hostile_report() -> dict:
    from miniature.report.json_report import read_json

    report = read_json(Path(__file__).parent / "fixtures" / "report-v1.json")
    for result in report["results"]:
        result["candidate"] = HOSTILE
        for key in ("differing_ids", "lowest_ids"):
            if key in result:
                result[key] = [HOSTILE, *result[key]]
    report["created"] = HOSTILE
    report["gates"] = {"failed": HOSTILE, "total": HOSTILE}
    return report


def test_names_from_models_data_and_report_files_are_escaped_in_every_renderer(tmp_path):
    from miniature.report.html import write_html
    from miniature.report.markdown import markdown_summary
    from miniature.report.terminal import summary

    report = hostile_report()
    markdown = markdown_summary(report["results"])
    assert "<img" not in markdown and "<script" not in markdown and "&lt;img" in markdown and "\x1b" not in markdown
    assert all("\x1b" not in line for line in summary(report["results"])) and "\\x1b[31m" in "\n".join(summary(report["results"]))
    page = write_html(report["results"], tmp_path / "r.html", report=report).read_text()
    assert "<img src=x" not in page and "<script>alert" not in page and "&lt;script&gt;" in page


def test_the_report_command_escapes_a_crafted_report(tmp_path):
    report = hostile_report()
    report["gates"] = {"failed": 3, "total": 6}  # counts stay numbers: a string there is refused, naming the field
    (tmp_path / "r.json").write_text(json.dumps(report))
    result = run(*CLI, "report", "r.json", "--html", "r.html", "--markdown", "s.md", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "<script>alert" not in (tmp_path / "r.html").read_text() and "<script" not in (tmp_path / "s.md").read_text()
    assert "\x1b" not in result.stdout


def _fixture_report() -> dict:
    return json.loads((Path(__file__).parent / "fixtures" / "report-v1.json").read_text())


@pytest.mark.parametrize(("spoil", "said"), [
    (lambda r: r.update(results=None), "results: expected a list of results, got None"),
    (lambda r: r["results"][3].update(value="abc"), "results[3].value: expected a number or null, got 'abc'"),
    (lambda r: r["results"][0].pop("metric"), "results[0].metric: expected a string, got nothing (the field is missing)"),
    (lambda r: r["results"][2]["reference_detection"].update(auroc=[1]),
     "results[2].reference_detection.auroc: expected a number or null, got [1]"),
    (lambda r: r["gates"].update(failed="3"), "gates.failed: expected a whole number, got '3'"),
    (lambda r: r.update(warnings=["fine", 3]), "warnings[1]: expected a string, got 3"),
    (lambda r: next(iter(r["models"].values())).update(tuning=[]),
     "models[{first}].tuning: expected an object or null, got []"),
])
def test_the_report_command_names_the_field_a_malformed_report_has_wrong(tmp_path, spoil, said):
    report = _fixture_report()
    spoil(report)
    (tmp_path / "r.json").write_text(json.dumps(report))
    result = run(*CLI, "report", "r.json", "--markdown", "s.md", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    said = said.replace("{first}", repr(next(iter(report["models"]))))
    assert result.stderr.strip() == f"miniature: error: r.json: {said}"


def test_a_malformed_baseline_is_a_warning_and_the_runs_own_reports_are_written(pytester, tiny_models, tmp_path):
    args = ("--threshold", "error_jaccard=0.0", "--cache-dir", "cache")
    assert compare(tiny_models, str(tiny_models.student), tmp_path, *args, "--report", "base.json").returncode == 0
    base = json.loads((tmp_path / "base.json").read_text())
    for name, spoil, said in (("null", lambda r: r.update(results=None), "results: expected a list of results, got None"),
                              ("typed", lambda r: r["results"][0].update(value="abc"),
                               "results[0].value: expected a number or null, got 'abc'")):
        bad = json.loads(json.dumps(base))
        spoil(bad)
        (tmp_path / f"{name}.json").write_text(json.dumps(bad))
        result = compare(tiny_models, str(tiny_models.student), tmp_path, *args, "--compare-baseline", f"{name}.json",
                         "--report", f"{name}-r.json", "--markdown", f"{name}-s.md")
        assert result.returncode == 0, result.stderr
        assert f"baseline not compared: {tmp_path / name}.json: {said}" in result.stdout
        assert (tmp_path / f"{name}-r.json").is_file() and (tmp_path / f"{name}-s.md").is_file()
    # The plugin's --miniature-compare-baseline takes the same path: a warning line, the reports written, pytest's code.
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}"]
eval = "{tiny_models.eval_csv}"
cache_dir = "{tmp_path / 'cache'}"
[tool.miniature.thresholds]
error_jaccard = 0.0
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--miniature-compare-baseline", str(tmp_path / "null.json"),
                                "--miniature-report", "r.json", "--miniature-markdown", "s.md")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*baseline not compared: *null.json: results: expected a list of results, got None"])
    assert (pytester.path / "r.json").is_file() and (pytester.path / "s.md").is_file()


# 10 ------------------------------------------------------------------------------------------------


def test_two_models_that_would_share_a_name_are_shown_apart(tiny_models, tmp_path):
    shutil.copytree(tiny_models.student, tmp_path / "m")
    (tmp_path / "pyproject.toml").write_text(f'[tool.miniature.models]\nm = "{tiny_models.teacher}"\n')
    result = run(*CLI, "compare", "--reference", "m", "--candidate", "./m", "--eval", str(tiny_models.eval_csv),
                 "--checks", "error_jaccard", "--report", "r.json", "--no-cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["models"]) == {"m", "./m"} and report["results"][0]["reference"] == "m"
    assert report["results"][0]["candidate"] == "./m"


# 11 ------------------------------------------------------------------------------------------------


def test_the_report_records_the_cpu_whose_int8_kernels_ran(tiny_models, tmp_path):
    result = compare(tiny_models, f"onnx:{tiny_models.onnx_int8}", tmp_path, "--report", "r.json", "--no-cache")
    assert result.returncode == 0
    platform = json.loads((tmp_path / "r.json").read_text())["platform"]
    assert isinstance(platform["cpu_flags"], list) and "cpu" in platform
    if sys.platform == "linux" and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in platform["cpu_flags"]


# 12 ------------------------------------------------------------------------------------------------


def test_a_challenge_point_that_is_a_validation_point_scores_as_it_did_there():
    from miniature import detect_ood, flag, tpr_threshold

    rng = np.random.default_rng(0)
    bank, validation = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    from miniature import kth_neighbour_distances

    scores = kth_neighbour_distances(bank, validation, (5,))[5]
    at = int(np.argmin(np.abs(scores - tpr_threshold(scores))))  # the validation point the threshold sits on
    # The same text read in another batch: its embedding moves by float noise.
    challenge = validation[[at]] + np.float32(1e-6) * rng.normal(size=(1, 8)).astype(np.float32)
    same = detect_ood(["p"], bank=bank, validation=validation, challenge=challenge, ks=(5,), same_as_validation=[at])[5]
    assert same.scores[0] == scores[at] and same.flagged == ({"p"} if flag(scores[[at]], same.threshold)[0] else set())


def test_infinite_qa_logits_are_a_model_error_and_their_nan_padding_is_not():
    from miniature.data import EvalSet
    from miniature.engine.local import check_finite
    from miniature.errors import ModelLoadError
    from miniature.outputs import ModelOutputs

    data = EvalSet("squad", ("q0", "q1"), ("context a", "context b"), questions=("a?", "b?"), answers=(("a",), ()))
    padded = np.array([[1.0, 2.0, np.nan], [0.5, 0.1, 0.3]], np.float32)
    fine = ModelOutputs(logits=None, cls=None, answers=np.array(["a", ""]), span_scores=np.array([1.0, -np.inf]),
                        null_scores=np.array([0.0, 0.1]), start_logits=padded, end_logits=padded)
    check_finite(type("M", (), {"name": "qa"})(), data, fine)  # padding and a window without a span are no fault
    broken = ModelOutputs(logits=None, cls=None, answers=fine.answers, span_scores=fine.span_scores,
                          null_scores=fine.null_scores, start_logits=np.where(np.isnan(padded), np.nan, np.inf),
                          end_logits=padded)
    with pytest.raises(ModelLoadError, match="non-finite start_logits .* for 2 of the 2 points of 'squad'"):
        check_finite(type("M", (), {"name": "qa"})(), data, broken)
