"""Model and dataset specs: what users type, and the errors they get when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from miniature.data.spec import RowSlice, parse_dataset_spec
from miniature.errors import UsageError
from miniature.models.spec import BUILTIN_ALIASES, parse_model_spec


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models" / "distil"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (tmp_path / "models" / "int8.onnx").write_bytes(b"onnx")
    return d


def test_local_directories_onnx_files_and_hub_ids(model_dir: Path, tmp_path: Path):
    spec = parse_model_spec("./models/distil", base_dir=tmp_path)
    assert (spec.backend, spec.is_local, spec.location, spec.name) == ("hf", True, str(model_dir), "distil")
    onnx = parse_model_spec("onnx:models/int8.onnx?output=1", base_dir=tmp_path)
    assert onnx.backend == "onnx" and onnx.options == {"output": "1"} and onnx.location.endswith("int8.onnx")
    assert parse_model_spec("models/int8.onnx", base_dir=tmp_path).backend == "onnx"
    assert parse_model_spec("hf:bert-base-uncased", base_dir=tmp_path).location == "bert-base-uncased"
    hub = parse_model_spec("hf:acme/bert-large-imdb?revision=main", base_dir=tmp_path)
    assert (hub.backend, hub.is_local, hub.location, hub.options) == ("hf", False, "acme/bert-large-imdb", {"revision": "main"})


def test_builtin_aliases_are_the_papers_six_models_and_their_squad2_checkpoints(tmp_path: Path):
    six = {"bert-large", "bert-base", "distilbert", "bert-medium", "bert-mini", "tiny-bert"}
    assert set(BUILTIN_ALIASES) == six | {f"{name}-squad2" for name in six}
    spec = parse_model_spec("tiny-bert", base_dir=tmp_path)
    assert spec.name == "tiny-bert" and spec.location == "google/bert_uncased_L-2_H-128_A-2" and not spec.is_local


def test_user_aliases_resolve_relative_paths_and_override_builtins(model_dir: Path, tmp_path: Path):
    aliases = {"student": "./models/distil", "bert-large": "hf:acme/large"}
    assert parse_model_spec("student", aliases=aliases, base_dir=tmp_path).location == str(model_dir)
    assert parse_model_spec("bert-large", aliases=aliases, base_dir=tmp_path).location == "acme/large"
    with pytest.raises(UsageError, match="refers to itself"):
        parse_model_spec("a", aliases={"a": "b", "b": "a"}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("./models/missing", r"Model path './models/missing' of model spec './models/missing' does not exist"),
        ("onnx:nothing.onnx", r"ONNX model file 'nothing.onnx' .* does not exist"),
        ("tf:some/model", r"Unknown model backend 'tf'"),
        ("models/distil?quantise=int8", r"Unknown option\(s\) quantise .* takes device, dtype, quantize, revision"),
        ("models/distil?quantize=int4", r"Expected quantize=int8 .* got quantize='int4'"),
        ("onnx:models/int8.onnx?tokenizer=nowhere", r"Tokenizer directory 'nowhere' .* does not exist"),
        ("models", r"has no config.json"),
        ("models/int8.onnx?quantize=int8", r"Unknown option\(s\) quantize"),
        ("models/distil?junk", r"Expected options of the form"),
        ("", r"Expected a model spec"),
        ("bert-huge", r"Unknown model alias 'bert-huge': it is not an alias \(bert-base, .*\) nor an existing path .*; for a hub model write hf:bert-huge"),
    ],
)
def test_bad_model_specs_name_the_input_and_what_was_expected(text: str, message: str, model_dir: Path, tmp_path: Path):
    with pytest.raises(UsageError, match=message):
        parse_model_spec(text, base_dir=tmp_path)


def test_dataset_specs_for_files_and_hub(tmp_path: Path):
    (tmp_path / "eval.csv").write_text("text,label\nhi,1\n")
    spec = parse_dataset_spec("eval.csv[:100]?label=label", base_dir=tmp_path)
    assert (spec.source, spec.format, spec.rows, spec.options) == ("file", "csv", RowSlice(None, "100"), {"label": "label"})
    hub = parse_dataset_spec("imdb:test[:1000]")
    assert (hub.source, hub.location, hub.config, hub.split, hub.rows.bounds(25000)) == ("hf", "imdb", None, "test", (0, 1000))
    glue = parse_dataset_spec("hf:glue:sst2:validation[10%:20%]")
    assert (glue.location, glue.config, glue.split, glue.rows.bounds(200)) == ("glue", "sst2", "validation", (20, 40))
    assert RowSlice("-10", None).bounds(50) == (40, 50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("missing.csv", r"Dataset file 'missing.csv' of dataset spec 'missing.csv' does not exist"),
        ("imdb", r"neither an existing file nor a Hugging Face dataset"),
        ("imdb:test[a:b]", r"Expected a row slice"),
        ("eval.csv?colour=red", r"Unknown option\(s\) colour"),
        ("eval.csv?format=xml", r"Expected format= one of"),
        ("data.weird", r"neither an existing file"),
    ],
)
def test_bad_dataset_specs(text: str, message: str, tmp_path: Path):
    (tmp_path / "eval.csv").write_text("text,label\nhi,1\n")
    with pytest.raises(UsageError, match=message):
        parse_dataset_spec(text, base_dir=tmp_path)


def test_existing_file_with_unknown_suffix_asks_for_a_format(tmp_path: Path):
    (tmp_path / "data.weird").write_text("x")
    with pytest.raises(UsageError, match=r"Cannot tell the format .* \?format="):
        parse_dataset_spec("data.weird", base_dir=tmp_path)
    assert parse_dataset_spec("data.weird?format=tsv", base_dir=tmp_path).format == "tsv"


def test_a_spec_can_name_the_models_task(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"")
    spec = parse_model_spec("onnx:model.onnx?task=question-answering&start=0&end=1", base_dir=tmp_path)
    assert spec.options == {"task": "question-answering", "start": "0", "end": "1"}
    with pytest.raises(UsageError, match="Expected task=text-classification|question-answering"):
        parse_model_spec("hf:acme/qa?task=summarization", base_dir=tmp_path)
