"""Loading eval sets from the real files in ../shared/data and from files users write; label alignment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miniature.data import align_labels, load_eval_set, parse_dataset_spec
from miniature.errors import DatasetError, LabelMismatchError


def load(text: str, base: Path):
    return load_eval_set(parse_dataset_spec(text, base_dir=base))


def test_sst2_dev_tsv_is_found_by_its_sentence_and_label_columns(shared_data: Path):
    data = load("sst2/dev.tsv?quoting=none", shared_data)
    assert len(data) == 872 and data.labels.count(1) == 444 and data.labels.count(0) == 428
    assert data.texts[0].startswith("it 's a charming") and data.ids[:2] == ("0", "1")


def test_imdb_reviews_with_quoted_fields_and_named_labels(shared_data: Path):
    data = load("imdb_cad/orig_test.tsv[:100]", shared_data)
    assert len(data) == 100 and set(data.labels) == {"Positive", "Negative"}
    full = load("imdb_cad/orig_test.tsv", shared_data)
    assert len(full) == 488 and full.labels.count("Positive") == 245


def test_headerless_files_by_column_index_and_slices_keep_row_ids(shared_data: Path):
    agnews = load("agnews/test.tsv[100:150]?header=none&text=0&label=1", shared_data)
    assert len(agnews) == 50 and agnews.ids[0] == "100" and set(agnews.labels) <= {"World", "Sports", "Business", "Sci/Tech"}
    uci = load("uci_sentiment_sentences/imdb_labelled.txt?header=none&quoting=none&text=0&label=1", shared_data)
    assert len(uci) == 1000 and uci.labels.count(1) == 500


def test_jsonl_parquet_and_id_columns(tmp_path: Path):
    import pandas as pd

    rows = [{"uid": f"r{i}", "content": f"text {i}", "target": i % 3} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        data = load(f"{name}[1:4]?id=uid", tmp_path)
        assert data.ids == ("r1", "r2", "r3") and data.texts == ("text 1", "text 2", "text 3") and data.labels == (1, 2, 0)


def test_unlabelled_text_is_an_eval_set_until_a_check_needs_labels(tmp_path: Path):
    (tmp_path / "u.csv").write_text("text\nhello\nworld\n")
    data = load("u.csv", tmp_path)
    assert data.labels is None
    with pytest.raises(DatasetError, match=r"Dataset 'u.csv' has no label column, which the check needs.*\?label="):
        data.require_labels("the check")


def test_fingerprint_follows_content(tmp_path: Path):
    (tmp_path / "a.csv").write_text("text,label\nhello,1\n")
    (tmp_path / "b.csv").write_text("text,label\nhello,1\n")
    (tmp_path / "c.csv").write_text("text,label\nhello,0\n")
    (tmp_path / "d.csv").write_text("text,label\nhello!,1\n")
    a, b, c, d = (load(n, tmp_path) for n in ("a.csv", "b.csv", "c.csv", "d.csv"))
    # Model outputs are keyed by what the models see: the same texts share cache entries,
    # whatever the file is called or however the points are labelled.
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert a.fingerprint != d.fingerprint


def test_challenge_sets_carry_in_out_flags(tmp_path: Path):
    (tmp_path / "c.csv").write_text("text,ood\nfilm review,in\nstock prices,out\nelection news,1\n")
    assert load("c.csv", tmp_path).ood == (False, True, True)
    (tmp_path / "bad.csv").write_text("text,is_ood\nx,maybe\n")
    with pytest.raises(DatasetError, match=r"row 0 has 'maybe' in its in/out column 'is_ood'; expected one of 1, true"):
        load("bad.csv", tmp_path)


@pytest.mark.parametrize(
    ("content", "spec", "message"),
    [
        ("sentence_text,y\nhi,1\n", "d.csv", r"has no text column: expected one named text, sentence.* its columns are sentence_text, y"),
        ("text,label\nhi,1\n", "d.csv?label=gold", r"has no label column 'gold'; its columns are text, label"),
        ("text,label\nhi,1\n,0\n", "d.csv", r"row 1 has no text in column 'text'"),
        ("text,label\nhi,\n", "d.csv", r"row 0 has no usable label in column 'label'"),
        ("text,label\nhi,1\n", "d.csv[5:]", r"has no rows in \[5:\] \(it has 1 rows\)"),
        ("text,label,id\na,1,x\nb,0,x\n", "d.csv", r"duplicate id 'x'"),
    ],
)
def test_bad_datasets_say_what_is_missing(content: str, spec: str, message: str, tmp_path: Path):
    (tmp_path / "d.csv").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load(spec, tmp_path)


def test_unreadable_file_names_the_file_and_format(tmp_path: Path):
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match=r"Could not read dataset file .*d.parquet as parquet"):
        load("d.parquet", tmp_path)


def test_hugging_face_datasets_path_with_class_label_names(tmp_path: Path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features)
    (tmp_path / "hubby").mkdir()
    ds.to_parquet(str(tmp_path / "hubby" / "test.parquet"))
    data = load_eval_set(parse_dataset_spec(f"hf:{tmp_path / 'hubby'}:test[1:]"))
    assert data.texts == ("good", "fine") and data.labels == (1, 1) and data.label_names == ("neg", "pos")
    assert data.ids == ("1", "2")
    with pytest.raises(DatasetError, match=r"Could not load Hugging Face dataset .*split 'nosuch'"):
        load_eval_set(parse_dataset_spec(f"hf:{tmp_path / 'hubby'}:nosuch"))


def test_align_labels_by_index_by_name_and_by_label_map():
    named = {0: "NEGATIVE", 1: "POSITIVE"}
    assert align_labels([1, 0, 1], id2label=named, num_labels=2).tolist() == [1, 0, 1]
    assert align_labels(["Positive", "negative"], id2label=named, num_labels=2).tolist() == [1, 0]
    # A ClassLabel dataset whose class order differs from the model's.
    assert align_labels([0, 1], id2label=named, num_labels=2, label_names=["pos", "neg"],
                        label_map={"pos": "POSITIVE", "neg": "NEGATIVE"}).tolist() == [1, 0]
    assert align_labels([0, 1], id2label={1: "neg", 0: "pos"}, num_labels=2, label_names=["neg", "pos"]).tolist() == [1, 0]
    generic = {0: "LABEL_0", 1: "LABEL_1"}
    assert align_labels(["good", "bad"], id2label=generic, num_labels=2, label_map={"good": 1, "bad": "0"}).tolist() == [1, 0]
    assert isinstance(align_labels([1], id2label=None, num_labels=2), np.ndarray)


def test_align_labels_errors_name_the_label_the_dataset_and_the_model():
    with pytest.raises(LabelMismatchError, match=r"Label 'Positive' of dataset 'd' matches no label of model 'm' \(0=LABEL_0, 1=LABEL_1\); its labels are unnamed"):
        align_labels(["Positive"], id2label={0: "LABEL_0", 1: "LABEL_1"}, num_labels=2, dataset="d", model="m")
    with pytest.raises(LabelMismatchError, match=r"Label 3 of dataset 'd' is class index 3, but model 'm' has 2 classes"):
        align_labels([3], id2label=None, num_labels=2, dataset="d", model="m")
    with pytest.raises(LabelMismatchError, match=r"label_map has no entry for label 'meh'"):
        align_labels(["meh"], id2label=None, num_labels=2, label_map={"good": 1}, dataset="d", model="m")
