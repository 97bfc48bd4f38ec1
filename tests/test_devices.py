"""Devices and dtypes: resolution, errors, ONNX providers, the cache key, the report, and progress lines.

On a machine with a GPU the CUDA tests run too (scripts/device_check.sh runs them on the device machine).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def test_auto_resolves_to_what_torch_sees():
    from miniature.models.device import resolve_device

    expected = "cuda:0" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_where_there_is_none_is_a_usage_error_naming_what_was_found(device):
    from miniature.errors import UsageError
    from miniature.models.device import resolve_device

    with pytest.raises(UsageError, match=rf"asks for {device}, but torch sees no such CUDA device here \(torch .*CUDA devices: 0"):
        resolve_device(device, f"{device}")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CPU", 0])
def test_unknown_devices_and_dtypes_are_usage_errors(bad):
    from miniature import Settings
    from miniature.errors import UsageError

    with pytest.raises(UsageError, match="Expected device to be auto, cpu, cuda, cuda:N or mps"):
        Settings(device=bad)
    with pytest.raises(UsageError, match="Expected dtype to be one of float32, float16, bfloat16"):
        Settings(dtype="int4")


def test_a_model_spec_device_or_dtype_is_checked(tiny_models):
    from miniature.errors import UsageError
    from miniature.models.spec import parse_model_spec

    assert parse_model_spec(f"{tiny_models.teacher}?device=cpu&dtype=bfloat16").options["dtype"] == "bfloat16"
    with pytest.raises(UsageError, match=r"model spec .*\?device=\)"):
        parse_model_spec(f"{tiny_models.teacher}?device=tpu")
    with pytest.raises(UsageError, match="dtype"):
        parse_model_spec(f"onnx:{tiny_models.onnx}?dtype=float16")  # an ONNX graph keeps its own dtype


def test_onnx_providers_follow_the_device():
    import onnxruntime

    from miniature.models.device import onnx_providers

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    cuda = onnx_providers("cuda:1")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert cuda == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]
    else:  # onnxruntime without its GPU build runs on the CPU, and the report says so
        assert cuda == ["CPUExecutionProvider"]


def test_the_cache_key_changes_with_device_and_dtype_and_the_report_says_where_each_model_ran(tiny_models, tmp_path):
    from miniature import Settings
    from miniature.session import Session

    cache = tmp_path / "cache"
    first = Session(Settings(cache_dir=cache, device="cpu"), live=False)
    data = str(tiny_models.eval_csv)
    fp32 = first.model(str(tiny_models.teacher)).outputs(first.dataset(data))
    onnx = first.model(f"onnx:{tiny_models.onnx_int8}").outputs(first.dataset(data))
    assert fp32.logits is not None and onnx.logits is not None
    models = first.report()["models"]
    assert {k: models["teacher"][k] for k in ("device", "dtype", "provider")} == {
        "device": "cpu", "dtype": "float32", "provider": None}
    assert models["onnx-int8/model.onnx"]["provider"] == "CPUExecutionProvider"

    second = Session(Settings(cache_dir=cache, device="cpu", dtype="bfloat16"), live=False)
    bf16 = second.model(str(tiny_models.teacher)).outputs(second.dataset(data))
    assert second.stats.computed == 1 and second.stats.from_disk == 0  # bfloat16 is not float32's entry
    assert np.abs(bf16.logits - fp32.logits).max() > 0  # and computes something else
    same = Session(Settings(cache_dir=cache, device="cpu"), live=False)
    same.model(str(tiny_models.teacher)).outputs(same.dataset(data))
    assert same.stats.from_disk == 1

    from miniature.models.device import Placement

    assert Placement("cpu", "float32").key() != Placement("cpu", "float16").key()
    if torch.cuda.is_available():
        assert Placement("cuda:0", "float32").key() != Placement("cpu", "float32").key()


def test_torch_int8_stays_on_the_cpu_under_auto_and_refuses_another_device(tiny_models):
    from miniature import Settings
    from miniature.errors import UsageError
    from miniature.session import Session

    session = Session(Settings(cache_dir=None), live=False)
    int8 = session.model(f"{tiny_models.teacher}?quantize=int8")
    assert session.engine.backend(int8).device == "cpu"
    half = Session(Settings(cache_dir=None, dtype="float16"), live=False)
    with pytest.raises(UsageError, match="runs on the CPU in float32 only"):
        half.engine.loaded_backend(half.model(f"{tiny_models.teacher}?quantize=int8"))


@needs_cuda
def test_on_cuda_fp32_outputs_match_the_cpu_and_fp16_stays_close(tiny_models):
    from miniature import Settings
    from miniature.session import Session

    data = str(tiny_models.eval_csv)
    runs = {}
    for device, dtype in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "float16")):
        session = Session(Settings(cache_dir=None, device=device, dtype=dtype), live=False)
        runs[device, dtype] = session.model(str(tiny_models.teacher)).outputs(session.dataset(data))
        assert session.report()["models"]["teacher"]["device"].startswith(device)
    cpu = runs["cpu", "float32"].logits
    assert np.abs(runs["cuda", "float32"].logits - cpu).max() < 1e-3
    assert np.abs(runs["cuda", "float16"].logits - cpu).max() < 5e-2
    assert (runs["cuda", "float32"].predictions == runs["cpu", "float32"].predictions).mean() > 0.99


def test_progress_says_points_per_second_and_time_left_then_one_line_when_done():
    from miniature.progress import Progress

    lines: list[str] = []
    live = Progress(lines.append, "running m on d", 100, live=True, every=0.0)
    live.update(40)
    live.update(100)
    assert lines[0].startswith("running m on d: 40/100 points, ") and "points/s" in lines[0] and "left" in lines[0]
    assert lines[1].startswith("running m on d: 100/100 points") and "done in" in lines[1]
    quiet: list[str] = []
    logged = Progress(quiet.append, "attacking m", 3, unit="examples", live=False, per="min")
    for done in (1, 2, 3):
        logged.update(done, f"{done} successful so far")
    assert len(quiet) == 1 and "3/3 examples" in quiet[0] and "examples/min" in quiet[0]


def test_a_pytest_run_prints_forward_pass_progress(pytester, tiny_models):
    pytester.makepyfile("""
        def test_outputs(reference, eval_set):
            assert reference.outputs(eval_set).logits is not None
    """)
    args = ["--reference", str(tiny_models.teacher), "--miniature-eval", str(tiny_models.eval_csv), "--miniature-no-cache"]
    result = pytester.runpytest_subprocess(*args, "-q")  # captured as usual: progress must still reach the terminal
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["miniature: running teacher on *eval.csv: 200/200 points, * points/s, done in *"])


def test_the_ray_engine_without_ray_names_the_extra(tiny_models, tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        sys.modules["ray"] = None  # as if the ray extra were not installed
        from miniature import Settings
        from miniature.errors import MissingExtraError
        from miniature.session import Session
        session = Session(Settings(engine="ray", cache_dir=None), live=False)
        try:
            session.model({str(tiny_models.teacher)!r}).outputs(session.dataset({str(tiny_models.eval_csv)!r}))
        except MissingExtraError as exc:
            print("ERROR:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert """ERROR: engine = "ray" needs Ray: pip install 'pytest-miniature[ray]'""" in done.stdout, done.stderr[-2000:]
