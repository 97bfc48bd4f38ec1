"""A small sentiment corpus authored by this project for the offline demo.

Sentences are composed from hand-written parts: aspects of a film, positive and negative
verdicts, and harder forms (negation, contrast, faint praise) on which small models
disagree with large ones. Deterministic for a given seed; no public data set is copied.
"""

from __future__ import annotations

import random

ASPECTS = [
    "the plot", "the acting", "the soundtrack", "this film", "the ending", "the dialogue", "the cast",
    "the pacing", "the camera work", "the script", "the lead performance", "the set design", "the humour",
    "the final act", "the director's vision", "the story", "the editing", "the villain", "the costumes",
    "the opening scene",
]
POSITIVE = [
    "was wonderful", "felt fresh and moving", "is a delight from start to finish", "kept me gripped",
    "was beautifully done", "made the whole evening worthwhile", "is clever and warm", "left me smiling",
    "was genuinely thrilling", "deserves every award it gets", "is a quiet triumph", "was sharp and funny",
    "felt honest and alive", "surprised me in the best way", "is worth seeing twice",
]
NEGATIVE = [
    "was dull", "felt lazy and tired", "is a chore to sit through", "bored me to tears", "was badly handled",
    "wasted a good idea", "is clumsy and loud", "left me cold", "was painfully predictable",
    "should have been cut", "is a mess", "was flat and lifeless", "felt cheap and rushed",
    "annoyed me constantly", "is not worth the ticket",
]
# Harder forms: the label is the sentence's overall verdict.
NEGATED_NEGATIVE = ["was not bad at all", "was never boring", "is far from a mess", "did not disappoint"]
NEGATED_POSITIVE = ["was not good", "was hardly thrilling", "is far from wonderful", "never really worked"]
OPENERS = ["", "honestly, ", "to be fair, ", "in the end, ", "frankly, ", "I thought "]


def demo_corpus(
    n: int, *, seed: int = 0, hard_share: float = 0.4, exclude: set[str] | frozenset[str] = frozenset()
) -> tuple[list[str], list[int]]:
    """``n`` unique (text, label) pairs, label 1 = positive, balanced and shuffled.

    ``hard_share`` of them use the harder forms (half negation, half contrast); sentences
    in ``exclude`` are never produced, so a train and an eval split cannot overlap.
    """
    rng = random.Random(seed)
    texts, labels = [], []
    seen = set(exclude)
    while len(texts) < n:
        label = len(texts) % 2
        form = rng.random()
        aspect = rng.choice(ASPECTS)
        opener = rng.choice(OPENERS)
        if form >= hard_share:
            verdict = rng.choice(POSITIVE if label else NEGATIVE)
            sentence = f"{opener}{aspect} {verdict}."
        elif form < hard_share / 2:
            verdict = rng.choice(NEGATED_NEGATIVE if label else NEGATED_POSITIVE)
            sentence = f"{opener}{aspect} {verdict}."
        else:
            # Contrast: the clause after "but" carries the verdict.
            other = rng.choice([a for a in ASPECTS if a != aspect])
            first = rng.choice(NEGATIVE if label else POSITIVE)
            second = rng.choice(POSITIVE if label else NEGATIVE)
            sentence = f"{opener}{aspect} {first}, but {other} {second}."
        sentence = sentence[0].upper() + sentence[1:]
        if sentence in seen:
            continue
        seen.add(sentence)
        texts.append(sentence)
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


# Off-topic sentences for the demo's out-of-distribution challenge set: no films, no verdicts.
OFF_TOPIC_SUBJECTS = [
    "the central bank", "the morning train", "a cold front", "the city council", "the harvest", "the new bridge",
    "share prices", "the football club", "the bakery on the corner", "the school board", "a local farmer",
    "the mountain road", "the quarterly report", "the river", "the night shift",
]
OFF_TOPIC_PREDICATES = [
    "raised interest rates by a quarter point", "was delayed by twenty minutes", "will bring snow to the north",
    "approved the budget for next year", "came in earlier than expected", "opened to traffic on Monday",
    "fell sharply after the announcement", "signed a new goalkeeper", "sells out of bread by noon",
    "voted to extend the school day", "planted barley in the lower field", "was closed after the rockslide",
    "showed a small rise in revenue", "flooded the low meadows", "starts at ten in the evening",
]


def off_topic_sentences(n: int, *, seed: int = 0) -> list[str]:
    """``n`` unique sentences about anything but films: the demo's out-of-distribution points."""
    rng = random.Random(seed)
    sentences: list[str] = []  # a list, not a set: set order changes with PYTHONHASHSEED
    while len(sentences) < n:
        sentence = f"{rng.choice(OFF_TOPIC_SUBJECTS)} {rng.choice(OFF_TOPIC_PREDICATES)}."
        sentence = sentence[0].upper() + sentence[1:]
        if sentence not in sentences:
            sentences.append(sentence)
    return sentences
