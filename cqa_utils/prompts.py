"""The one place that turns records into text, for training (02) and scoring (03).

Base models have no chat template, so the default ``plain`` template is plain text with
explicit section markers. The scoring prefixes for ΔI differ only by the constraint
block: the conditional prefix holds context + constraints, the unconditional one the
same template with the constraint block left out. Both end with the same separator, so
x is tokenized identically after either (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

from .data import CONSTRAINT_TYPES, Annotation, BenchmarkItem, Constraints


@dataclass(frozen=True)
class Template:
    """Section markers of one text format; each header ends with a newline."""

    context: str
    constraints: str
    passage: str
    appreciation: str
    step: str  # format of one CoT step, fields: number, type, text
    verdict: str  # fields: verdict, summary
    gap: str = "\n"


TEMPLATES = {
    "plain": Template(
        context="### Context\n",
        constraints="### Constraints\n",
        passage="### Passage\n",
        appreciation="### Appreciation\n",
        step="{number}. [{type}] {text}\n",
        verdict="Verdict: {verdict}. {summary}\n",
    ),
    "compact": Template(
        context="Context: ",
        constraints="Constraints: ",
        passage="Text:\n",
        appreciation="Appreciation:\n",
        step="- {type}: {text}\n",
        verdict="Verdict: {verdict}. {summary}\n",
    ),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"prompt.template={name!r} is not a known template; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def constraint_block(constraints: Constraints, slots: tuple[str, ...] = CONSTRAINT_TYPES) -> str:
    """One ``Slot: text`` line per slot, in the fixed order intent, audience, reality."""
    return "".join(f"{slot.capitalize()}: {getattr(constraints, slot).strip()}\n"
                   for slot in CONSTRAINT_TYPES if slot in slots)


def _prefix(template: Template, context: str, constraints: Constraints | None,
            slots: tuple[str, ...] = CONSTRAINT_TYPES) -> str:
    parts = []
    if context.strip():
        parts.append(template.context + context.strip() + "\n" + template.gap)
    if constraints is not None:
        parts.append(template.constraints + constraint_block(constraints, slots) + template.gap)
    parts.append(template.passage)
    return "".join(parts)


def scoring_prefixes(item: BenchmarkItem, template: str = "plain") -> dict[str, str]:
    """The two ΔI prefixes: ``cond`` (context + y) and ``uncond`` (context only).

    Example (plain): cond = "### Context\\n…\\n\\n### Constraints\\nIntent: …\\n\\n### Passage\\n".
    """
    tpl = get_template(template)
    return {"cond": _prefix(tpl, item.context, item.constraints), "uncond": _prefix(tpl, item.context, None)}


def control_prefixes(item: BenchmarkItem, partners: list[BenchmarkItem], slots: tuple[str, ...],
                     template: str = "plain") -> dict[str, str]:
    """Prefixes of the ΔI controls, by condition name (same template, x's own context):

    * ``mismatch:<id>`` — the constraint block of another item of the same group;
    * ``slot:<type>`` — x's own constraint block reduced to that one slot's line.
    """
    tpl = get_template(template)
    prefixes = {f"mismatch:{other.id}": _prefix(tpl, item.context, other.constraints) for other in partners}
    return prefixes | {f"slot:{slot}": _prefix(tpl, item.context, item.constraints, (slot,)) for slot in slots}


def continuation(text: str) -> str:
    """The scored text x: stripped of outer whitespace so both conditions see the same string."""
    return text.strip()


@dataclass(frozen=True)
class TrainingText:
    """One training example: the loss covers ``target`` only, never ``prompt``.

    ``target_id`` is the annotation the target text comes from (another one in the
    ``shuffled_cot`` arm; see :mod:`cqa_utils.arms`).
    """

    id: str
    prompt: str
    target: str
    target_id: str = ""


def verdict_line(ann: Annotation, tpl: Template) -> str:
    return tpl.verdict.format(verdict=ann.judgment.verdict, summary=ann.judgment.summary.strip())


def appreciation_text(ann: Annotation, template: str = "plain") -> TrainingText:
    """prompt = context + constraints + passage; target = the CoT steps and the judgment."""
    tpl = get_template(template)
    prompt = _prefix(tpl, ann.context, ann.constraints) + ann.passage.strip() + "\n" + tpl.gap + tpl.appreciation
    steps = "".join(tpl.step.format(number=i, type=s.type, text=s.text.strip()) for i, s in enumerate(ann.cot, 1))
    return TrainingText(ann.id, prompt, steps + verdict_line(ann, tpl), ann.id)


def passage_text(ann: Annotation, template: str = "plain") -> TrainingText:
    """prompt = the conditional scoring prefix (context + constraints); target = the passage,
    exactly as stage 03 scores a benchmark x after its prefix."""
    tpl = get_template(template)
    return TrainingText(ann.id, _prefix(tpl, ann.context, ann.constraints), continuation(ann.passage), ann.id)
