"""Seconds and model queries per attacked example: this project's wrapper against TextAttack's stock one.

    .venv/bin/python benchmarks/bench_attack_wrapper.py [--out /tmp/imdb-attack] [--examples 5]

Both wrappers answer the same BERT-Attack (same masked LM, same settings, same IMDB reviews)
against the example's fine-tuned all-MiniLM-L6-v2 (built by examples/imdb_attack/build.py).
TextAttack's ``HuggingFaceModelWrapper`` pads every query to the tokenizer's maximum length
(512); ``BackendModelWrapper`` sorts each batch by length and pads to its longest member.
Both truncate at 512 tokens, so they see the same text and must reach the same outcomes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "imdb_attack"))

from build import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/imdb-attack"))
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args()
    specs = build(args.out)

    import torch

    from miniature.attack.offline import import_textattack

    import_textattack()  # offline: the project's NLTK stopwords, no download step
    from textattack.models.wrappers import HuggingFaceModelWrapper
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from miniature import Session, Settings
    from miniature.attack.recipe import build_attack
    from miniature.attack.runs import _outcome, load_masked_lm
    from miniature.attack.wrapper import BackendModelWrapper
    from miniature.tasks import classification

    torch.set_num_threads(2)
    settings = Settings(cache_dir=None, max_length=512, attack={"model": specs["masked-lm"]})
    runner = Session(settings)
    data = runner.dataset(specs["attack-set"])
    reference = runner.model(specs["minilm-imdb"])
    gold = classification.TextClassification().gold(runner.engine, reference, data, "benchmark")
    masked_lm, lm_tokenizer = load_masked_lm(runner.engine, runner.model(specs["masked-lm"]))
    ours = BackendModelWrapper(runner.engine.loaded_backend(reference), batch_size=32, max_length=512)
    stock = HuggingFaceModelWrapper(AutoModelForSequenceClassification.from_pretrained(specs["minilm-imdb"]).eval(),
                                    AutoTokenizer.from_pretrained(specs["minilm-imdb"]))
    rows = {}
    for name, wrapper in (("BackendModelWrapper (this project)", ours), ("HuggingFaceModelWrapper (TextAttack)", stock)):
        attack = build_attack(wrapper, masked_lm=masked_lm, lm_tokenizer=lm_tokenizer, settings=settings.attack,
                              lm_max_length=512, batch_size=32)
        start, queries, outcomes = time.perf_counter(), 0, []
        for i in range(args.examples):
            result = attack.attack(data.texts[i], int(gold[i]))
            outcome = _outcome(data.ids[i], result)
            outcomes.append(outcome.status)
            queries += outcome.queries
        seconds = time.perf_counter() - start
        rows[name] = (seconds / args.examples, queries / args.examples, outcomes)
        print(f"{name}: {seconds / args.examples:.1f} s and {queries / args.examples:.0f} queries per example; "
              f"outcomes {outcomes}", flush=True)
    (ours_s, _, ours_o), (stock_s, _, stock_o) = rows.values()
    print(f"speed-up: {stock_s / ours_s:.2f}x; same outcomes: {ours_o == stock_o}")


if __name__ == "__main__":
    main()
