"""The QA gate on a slice of the shared SQuAD 2.0 dev file, with NewsQA as the challenge set.

    .venv/bin/python examples/squad_qa/run.py [--out /tmp/squad-qa] [--gated 400] [--steps 600]

Builds the models of build.py once, then writes a small project (pyproject.toml with
task = "question-answering" and three gates) and runs pytest on it, as a team would in CI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from build import SQUAD, build  # noqa: E402

NEWSQA = SQUAD.parents[1] / "newsqa" / "NewsQA_sample.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/squad-qa"))
    parser.add_argument("--gated", type=int, default=400, help="gate on the first N questions of the dev file")
    parser.add_argument("--steps", type=int, default=600, help="fine-tuning steps (batch 8)")
    args = parser.parse_args()
    specs = build(args.out, gated=args.gated, steps=args.steps)
    project = args.out / "project"
    project.mkdir(exist_ok=True)
    candidates = ", ".join(f'"{name}"' for name in ("torch-int8", "onnx-int8", "dropped-3l"))
    aliases = "\n".join(f'"{name}" = "{spec}"' for name, spec in specs.items())
    (project / "pyproject.toml").write_text(f"""[tool.miniature]
task = "question-answering"
reference = "minilm-squad"
candidates = [{candidates}]
eval = "{SQUAD}[:{args.gated}]"
# Deep-NN bank: other SQuAD paragraphs' questions; challenge: NewsQA (CNN news) questions.
train = "{SQUAD}[2000:2600]"
ood = "{NEWSQA}"
max_length = 256
doc_stride = 64
# After 600 steps MiniLM mostly abstains: at the default threshold 0 it answers none of the
# 400 questions. 4.0 makes it answer where its best span is within 4 of the no-answer score.
null_threshold = 4.0

[tool.miniature.models]
{aliases}

[tool.miniature.thresholds]
error_jaccard = 0.6
knn_agreement = {{ min = 0.3, k = 10 }}
ood_agreement = 0.5
""")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "pyproject.toml", "-v",
                           "--miniature-report", "report.json"], cwd=project)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
