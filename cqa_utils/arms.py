"""Training arms: what the fine-tune's targets are, so the study can tell content from format.

Driven by stage 02 (``train.arm``; notebook 02) through :func:`training_texts`. Every arm
trains on the same annotations with the same epochs, learning rate and batch; the token
budget differs only where the arm's target is shorter (``verdict_only``):

* ``cot`` — the paper: prompt = context + constraints + passage, target = the CoT steps
  and the verdict;
* ``shuffled_cot`` — the same targets, each after another annotation's prompt (a seeded
  derangement): the text the model learns is unchanged, the link between a passage and its
  reasoning is broken;
* ``verdict_only`` — target = the verdict line alone: the answer without the reasoning;
* ``passage_lm`` — prompt = context + constraints (the scoring prefix), target = the
  passage: a positive control that trains P(x | y) directly, showing what a real effect on
  ΔI looks like at this scale.
"""
from __future__ import annotations

from .data import Annotation
from .prompts import TrainingText, appreciation_text, get_template, passage_text, verdict_line

ARMS = ("cot", "shuffled_cot", "verdict_only", "passage_lm")


def derangement(n: int, seed: int) -> list[int]:
    """A uniformly drawn permutation of range(n) with no fixed point (rejection sampling).

    About e ≈ 2.7 draws are needed on average; numpy's Generator keeps it reproducible.
    """
    import numpy as np
    if n < 2:
        raise ValueError(f"shuffled_cot needs at least 2 annotations to pair each with another's CoT, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm.tolist()


def training_texts(annotations: list[Annotation], arm: str, template: str = "plain",
                   seed: int = 0) -> list[TrainingText]:
    """One (prompt, target) per annotation for ``arm``; ``target_id`` names the target's source."""
    if arm not in ARMS:
        raise ValueError(f"train.arm={arm!r} is not an arm; known: {list(ARMS)}")
    if arm == "passage_lm":
        return [passage_text(ann, template) for ann in annotations]
    texts = [appreciation_text(ann, template) for ann in annotations]
    if arm == "verdict_only":
        tpl = get_template(template)
        return [TrainingText(t.id, t.prompt, verdict_line(ann, tpl), t.id) for t, ann in zip(texts, annotations)]
    if arm == "shuffled_cot":
        order = derangement(len(texts), seed)
        return [TrainingText(t.id, t.prompt, texts[j].target, texts[j].id) for t, j in zip(texts, order)]
    return texts
