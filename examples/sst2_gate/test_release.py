"""A release gate as a team would write it: the demo's models, judged on real SST-2 sentences.

Run from the repository root after `miniature demo --out /tmp/demo-full` (see README.md here).
"""

from miniature import assert_error_jaccard


def test_candidate_makes_the_reference_errors(reference, candidate, eval_set):
    result = assert_error_jaccard(reference, candidate, eval_set, min=0.5)
    # Beyond the gate: a compressed model should not lose many points its parent got right.
    assert result.negative_flip_rate <= 0.10, f"negative-flip rate {result.negative_flip_rate:.3f} > 0.10"
