"""GGUF models run by llama.cpp (#22): the recipe, the backend against an independent llama.cpp loop and against
transformers, one tokenization for a pair, batch-mates, and the errors a broken GGUF gives. Every GGUF here is made
in-process from the tests' tiny Llama by ``miniature compress gguf`` (nothing is downloaded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax, rel_entr

pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")


@pytest.fixture(scope="module")
def ggufs(tiny_ggufs) -> Path:
    return tiny_ggufs


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miniature.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def session(**settings):
    from miniature import Session, Settings

    return Session(Settings(cache_dir=None, task="causal-lm", max_length=64, **settings))


def test_the_recipe_writes_llama_cpp_quantizations_with_the_tokenizer_and_a_manifest(ggufs, tiny_lms, tmp_path):
    result = cli("compress", "gguf", str(tiny_lms.llama), str(tmp_path / "q4"), "--type", "q4_1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    written = tmp_path / "q4" / "model.Q4_1.gguf"
    assert f"--candidate gguf:{written}" in result.stdout
    manifest = json.loads((tmp_path / "q4" / "miniature-manifest.json").read_text())
    assert manifest["recipe"] == "gguf-q4_1" and manifest["file_type"] == "Q4_1"
    assert manifest["tensor_types"]["Q4_1"] >= 14 and (tmp_path / "q4" / "tokenizer.json").is_file()
    for kind, files in (("F16", "f16/model.F16.gguf"), ("Q8_0", "q8_0/model.Q8_0.gguf"), ("Q4_0", "q4_0/model.Q4_0.gguf")):
        assert json.loads((ggufs / files).with_name("miniature-manifest.json").read_text())["file_type"] == kind
    sizes = [(ggufs / f).stat().st_size for f in ("f16/model.F16.gguf", "q8_0/model.Q8_0.gguf", "q4_0/model.Q4_0.gguf")]
    assert sizes == sorted(sizes, reverse=True)
    bad = cli("compress", "gguf", str(tiny_lms.gpt2), str(tmp_path / "gpt2"), cwd=tmp_path)
    assert bad.returncode == 2 and "writes Llama-family models" in bad.stderr and "convert_hf_to_gguf.py" in bad.stderr
    unknown = cli("compress", "gguf", str(tiny_lms.llama), str(tmp_path / "x"), "--type", "Q9_9", cwd=tmp_path)
    assert unknown.returncode == 2 and "Expected --type to be one of F16, Q8_0" in unknown.stderr


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    """One text's logits from llama-cpp-python's high-level ``Llama`` (its own eval loop, one sequence, all logits)."""
    from llama_cpp import Llama

    model = Llama(model_path=str(path), n_ctx=128, n_batch=128, logits_all=True, verbose=False, n_threads=1)
    model.eval(ids)
    return np.array(model.scores[: len(ids)], dtype=np.float64)


def test_kl_against_the_f16_hf_source_matches_an_independent_llama_cpp_loop_and_is_small(ggufs, tiny_lms):
    """The project's KL of the HF model against its GGUF F16 and Q4_0 equals scipy's over logits from transformers
    and from llama-cpp-python's own high-level loop, text by text; F16 keeps it tiny and Q4_0 drifts more."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from miniature import kl_divergence, top1_agreement

    tokenizer = AutoTokenizer.from_pretrained(tiny_lms.llama)
    hf = AutoModelForCausalLM.from_pretrained(tiny_lms.llama).eval()
    run = session()
    data = run.dataset(str(tiny_lms.texts))
    reference = run.model(str(tiny_lms.llama))
    figures = {}
    for name in ("f16/model.F16.gguf", "q4_0/model.Q4_0.gguf"):
        candidate = run.model(str(ggufs / name))
        kl, top1 = kl_divergence(reference, candidate, data), top1_agreement(reference, candidate, data)
        per_token, same = [], []
        import torch

        for text in data.texts:
            ids = tokenizer(text, truncation=True, max_length=64)["input_ids"]
            with torch.inference_mode():
                p = log_softmax(hf(input_ids=torch.tensor([ids])).logits[0].double().numpy()[:-1], axis=-1)
            q = log_softmax(llama_cpp_logits(ggufs / name, ids)[:-1], axis=-1)
            per_token += list(rel_entr(np.exp(p), np.exp(q)).sum(axis=-1))
            same += list(p.argmax(-1) == q.argmax(-1))
        # the loop's llama.cpp context (its own size, thread count and attention kernel) rounds its float sums in
        # another order than the backend's: logits agree to about 1e-6, which moves a KL of 6e-8 by 2 % and turns a
        # few near-ties of the tiny model's 512 tokens (3 of 1,736 positions on Q4_0)
        assert float(kl) == pytest.approx(np.mean(per_token), rel=1e-3, abs=5e-9)
        assert float(top1) == pytest.approx(np.mean(same), abs=0.005)
        figures[name] = float(kl)
    assert figures["f16/model.F16.gguf"] < 1e-5  # F16 weights, F16 key/value cache: rounding only
    assert figures["q4_0/model.Q4_0.gguf"] > 10 * figures["f16/model.F16.gguf"]


def test_a_gguf_against_itself_is_zero_and_gates_exit_0_and_1_through_the_cli(ggufs, tiny_lms, tmp_path):
    """The coarser quantization drifts more; a bound between the two, read from the run's own figures, passes Q8_0
    and fails Q4_0 (exit 1). The report records each GGUF's file type, tensor types and tokens/s."""
    copy = tmp_path / "copy"
    shutil.copytree(ggufs / "f16", copy)
    args = ["compare", "--task", "causal-lm", "--reference", f"gguf:{ggufs / 'f16' / 'model.F16.gguf'}",
            "--candidate", str(copy / "model.F16.gguf"), "--candidate", str(ggufs / "q8_0" / "model.Q8_0.gguf"),
            "--candidate", f"gguf:{ggufs / 'q4_0' / 'model.Q4_0.gguf'}?threads=1", "--eval", str(tiny_lms.choices),
            "--max-length", "64", "--cache-dir", str(tmp_path / "cache"), "--checks", "kl_divergence,top1_agreement,"
            "error_jaccard,knn_agreement", "--report", "r.json", "--html", "r.html"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    kl = {r["candidate"]: r["value"] for r in report["results"] if r["metric"] == "kl_divergence"}
    top1 = {r["candidate"]: r["value"] for r in report["results"] if r["metric"] == "top1_agreement"}
    same = {r["candidate"]: r["value"] for r in report["results"] if r["metric"] == "error_jaccard"}
    assert kl["copy/model.F16.gguf"] == 0.0 and top1["copy/model.F16.gguf"] == 1.0 and same["copy/model.F16.gguf"] == 1.0
    q8, q4 = kl["q8_0/model.Q8_0.gguf"], kl["q4_0/model.Q4_0.gguf?threads=1"]
    assert 0 < q8 < q4
    knn = [r for r in report["results"] if r["metric"] == "knn_agreement"]
    assert knn and all(r["status"] == "ok" for r in knn)  # llama.cpp's last hidden states, mean-pooled
    models = report["models"]
    assert models["q4_0/model.Q4_0.gguf?threads=1"]["gguf"]["file_type"] == "Q4_0"
    assert models["q4_0/model.Q4_0.gguf?threads=1"]["gguf"]["tensor_types"]["Q4_0"] >= 14
    assert models["q8_0/model.Q8_0.gguf"]["gguf"]["tokens_per_second"] > 0
    assert models["q8_0/model.Q8_0.gguf"]["provider"].startswith("llama.cpp")
    assert "Q4_0 (F32" in (tmp_path / "r.html").read_text()
    bound = (q8 * q4) ** 0.5
    second = cli(*args, "--threshold", f"kl_divergence={bound:.6g}", cwd=tmp_path)
    assert second.returncode == 1, second.stderr[-2000:]
    gates = {r["candidate"]: r["passed"] for r in json.loads((tmp_path / "r.json").read_text())["results"]
             if r["metric"] == "kl_divergence"}
    assert gates == {"copy/model.F16.gguf": True, "q8_0/model.Q8_0.gguf": True, "q4_0/model.Q4_0.gguf?threads=1": False}
    assert "model outputs: 0 computed" in second.stdout  # every statistic from the cache of the first run


def test_each_window_runs_alone_so_batch_mates_change_nothing(ggufs, tiny_lms):
    """llama.cpp chooses its kernels by the tokens in a decode, so a GGUF's windows run one at a time: a text's
    logits and hidden states through the batched path the tasks call equal its decode alone, to the bit, whatever
    shares its batch, and on one thread or two; the report says why."""
    from miniature import tasks
    from miniature.models import open_backend, parse_model_spec

    causal = tasks.get("causal-lm")
    texts = [row.split(",")[0] for row in tiny_lms.texts.read_text().splitlines()[1:9]]
    backend = open_backend(parse_model_spec(f"gguf:{ggufs / 'q4_0' / 'model.Q4_0.gguf'}?threads=1"))
    backend.load(causal, causal)
    assert backend.runs_alone() and "llama.cpp picks its matmul kernels" in backend.alone_because
    ids = backend.tokenizer(texts)["input_ids"]

    def batch(rows: list[list[int]]) -> dict[str, np.ndarray]:
        width = max(map(len, rows))
        out = {"input_ids": np.zeros((len(rows), width), dtype=np.int64), "attention_mask": np.zeros((len(rows), width), dtype=np.int64)}
        for row, tokens in enumerate(rows):
            out["input_ids"][row, :len(tokens)], out["attention_mask"][row, :len(tokens)] = tokens, 1
        return out

    together, hidden = backend.checked_forward(batch(ids))
    reordered, _ = backend.checked_forward(batch(ids[::-1]))
    two_threads = open_backend(parse_model_spec(f"gguf:{ggufs / 'q4_0' / 'model.Q4_0.gguf'}?threads=2"))
    two_threads.load(causal, causal)  # threads split each product, not its sums: not a cache-key part
    np.testing.assert_array_equal(two_threads.checked_forward(batch(ids))[0], together)
    for row, tokens in enumerate(ids):
        alone, alone_hidden = backend.forward(batch([tokens]))
        np.testing.assert_array_equal(alone[0], together[row, :len(tokens)])
        np.testing.assert_array_equal(alone_hidden[0], hidden[row, :len(tokens)])
        np.testing.assert_array_equal(alone[0], reordered[len(ids) - 1 - row, :len(tokens)])


def test_a_gguf_without_tokenizer_files_is_tokenized_by_llama_cpp_as_its_source_was(ggufs, tiny_lms):
    """The tiny Llama's byte-level BPE with a BOS, read back from the GGUF's own vocabulary by llama.cpp, cuts
    SST-2 sentences into the ids the HF tokenizer does; decoding gives the text back."""
    from transformers import AutoTokenizer

    from miniature import kl_divergence
    from miniature.models import open_backend, parse_model_spec

    backend = open_backend(parse_model_spec(str(ggufs / "bare" / "model.F16.gguf")))
    backend.load_tokenizer()
    assert type(backend.tokenizer).__name__ == "LlamaCppTokenizer"
    texts = [row.split(",")[0] for row in tiny_lms.texts.read_text().splitlines()[1:41]]
    hf = AutoTokenizer.from_pretrained(tiny_lms.llama)
    assert backend.tokenizer(texts)["input_ids"] == hf(texts)["input_ids"]
    assert backend.tokenizer.num_special_tokens_to_add() == 1 and backend.tokenizer.bos_token_id == hf.bos_token_id
    # llama.cpp decodes as the HF tokenizer does, except that it cleans up spaces before punctuation (as its
    # "gpt-2" pre-tokenizer type says to)
    assert backend.tokenizer.decode(hf(texts[0])["input_ids"], skip_special_tokens=True) == \
        hf.decode(hf(texts[0])["input_ids"], skip_special_tokens=True, clean_up_tokenization_spaces=True)
    run = session()
    assert float(kl_divergence(run.model(str(ggufs / "bare" / "model.F16.gguf")),
                               run.model(str(ggufs / "f16" / "model.F16.gguf")), run.dataset(str(tiny_lms.texts)))) == 0.0


def test_a_vocabulary_mismatch_and_a_truncated_gguf_are_model_errors(ggufs, tiny_lms, tmp_path):
    # the GGUF handed a tokenizer it was not converted from
    wrong = cli("compare", "--task", "causal-lm", "--reference", str(tiny_lms.llama), "--candidate",
                f"gguf:{ggufs / 'bare' / 'model.F16.gguf'}?tokenizer={tiny_lms.gpt2}", "--eval", str(tiny_lms.texts),
                "--no-cache", "--checks", "kl_divergence", cwd=tmp_path)
    assert wrong.returncode == 3, wrong.stdout[-2000:] + wrong.stderr[-2000:]
    assert "differ: token id 0 is '<s>' in the first and '<|endoftext|>' in the second" in wrong.stdout + wrong.stderr
    # a GGUF paired with a model of another vocabulary
    other = cli("compare", "--task", "causal-lm", "--reference", str(tiny_lms.gpt2), "--candidate",
                str(ggufs / "bare" / "model.F16.gguf"), "--eval", str(tiny_lms.texts), "--no-cache", "--checks",
                "kl_divergence", "--report", "r.json", cwd=tmp_path)
    assert other.returncode == 3, other.stdout[-2000:] + other.stderr[-2000:]
    assert "vocabularies differ (token id 0 is" in other.stdout + other.stderr
    assert json.loads((tmp_path / "r.json").read_text())["errors"][0]["kind"] == "model"
    # a file cut short (a download that stopped)
    whole = (ggufs / "q8_0" / "model.Q8_0.gguf").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.gguf").write_bytes(whole[: len(whole) // 2])
    cut = cli("compare", "--task", "causal-lm", "--reference", str(tiny_lms.llama), "--candidate",
              str(tmp_path / "cut" / "model.gguf"), "--eval", str(tiny_lms.texts), "--no-cache", "--checks",
              "kl_divergence", cwd=tmp_path)
    assert cut.returncode == 3, cut.stdout[-2000:] + cut.stderr[-2000:]
    assert "is not a readable GGUF file (truncated or damaged?)" in cut.stdout + cut.stderr


def test_gguf_specs_parse_and_name_what_is_wrong(ggufs, tmp_path):
    from miniature import UsageError
    from miniature.models import parse_model_spec

    path = ggufs / "q8_0" / "model.Q8_0.gguf"
    assert parse_model_spec(str(path)).backend == "gguf"
    spec = parse_model_spec(f"gguf:{path}?threads=2")
    assert (spec.backend, spec.name, spec.options) == ("gguf", "q8_0/model.Q8_0.gguf?threads=2", {"threads": "2"})
    with pytest.raises(UsageError, match="threads=<a positive whole number>"):
        parse_model_spec(f"gguf:{path}?threads=0")
    with pytest.raises(UsageError, match="GGUF model file .* does not exist"):
        parse_model_spec(str(tmp_path / "missing.gguf"))
    with pytest.raises(UsageError, match="the gguf backend takes"):
        parse_model_spec(f"gguf:{path}?quantize=int8")


def test_the_plugin_takes_a_gguf_candidate_by_its_path(pytester, ggufs, tiny_lms):
    shutil.copytree(ggufs / "q8_0", pytester.path / "q8")
    pytester.makepyprojecttoml(f"""
[tool.miniature]
task = "causal-lm"
eval = "{tiny_lms.texts}"
max_length = 64
cache_dir = ""
checks = ["kl_divergence", "top1_agreement"]

[tool.miniature.thresholds]
kl_divergence = 1.0
top1_agreement = 0.5
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "pyproject.toml", "-v", "--reference", str(tiny_lms.llama),
                                "--candidate", "./q8/model.Q8_0.gguf")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*kl_divergence?q8/model.Q8_0.gguf? PASSED*"])


def test_the_header_reader_reads_what_the_gguf_package_reads(ggufs):
    """The fast header reader against gguf's own GGUFReader: every metadata value and every tensor's type, size
    and data offset."""
    import gguf

    from miniature.models.gguf_header import read_header

    for name in ("f16/model.F16.gguf", "q4_0/model.Q4_0.gguf"):
        metadata, tensors = read_header(ggufs / name)
        reader = gguf.GGUFReader(str(ggufs / name))
        expected = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        assert metadata.keys() == expected.keys()
        for key, value in expected.items():
            assert metadata[key] == (pytest.approx(value) if isinstance(value, float) else value), key
        assert [(t.name, t.kind, t.elements, t.start, t.size) for t in tensors] == [
            (t.name, int(t.tensor_type), int(t.n_elements), int(t.data_offset), int(t.n_bytes)) for t in reader.tensors]
