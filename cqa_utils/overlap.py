"""Word overlap between a passage x and its constraints y: the model-free baseline.

ΔI could be large simply because y repeats x's words (the model copies them). This module
measures that directly, without any model, so the benchmark validator (``cqa validate``),
the scoring stage (03) and the statistics stage (04) all use one definition:

* tokens: lower-cased runs of letters, or of digits (``"1820s"`` gives ``"1820"``, ``"s"``);
* content words: tokens of three or more characters not in scikit-learn's English stop list
  (``ENGLISH_STOP_WORDS``, 318 words), reduced by the Snowball English stemmer so that
  ``keeper``/``keepers`` or ``wound``/``winding`` variants of one stem count once;
* overlap share: distinct content stems of x that occur in y, over distinct content stems of x.

Snowball is used rather than a hand-written suffix rule because it is the standard stemmer
of information retrieval and is deterministic across platforms.
"""
from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(r"[a-z]+|[0-9]+")
MIN_CHARS = 3


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=8192)
def content_words(text: str) -> frozenset[str]:
    """Distinct content stems of ``text`` (see the module docstring for the rules).

    Cached: the validator and stage 03 (once per checkpoint) ask for the same texts again.
    """
    stop = _stop_words()
    tokens = [t for t in _TOKEN.findall(text.lower().replace("’", "'")) if len(t) >= MIN_CHARS and t not in stop]
    return frozenset(_stemmer().stemWords(tokens))


def shared_words(x: str, y: str) -> list[str]:
    """Content stems of x that also occur in y, sorted (what a validator error shows)."""
    return sorted(content_words(x) & content_words(y))


def overlap_share(x: str, y: str) -> float:
    """Share of x's distinct content stems that occur in y, in [0, 1]; 0.0 for an x without any.

    Example: overlap_share("The keepers wound the clock.", "a keeper's clockwork") == 1/3
    (``keeper`` is shared; ``wound`` and ``clock`` are not, ``clockwork`` being another stem).
    """
    words = content_words(x)
    return len(words & content_words(y)) / len(words) if words else 0.0
