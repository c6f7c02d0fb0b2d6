"""Shares of creative records teaching each type, corrected for the classifier's errors.

Used by :mod:`cqa_utils.stages.data_audit` (notebook 01). A classifier's raw share is
biased by its errors: a cue set that misses half the audience records halves the audience
share. The Rogan–Gladen estimator undoes that from the classifier's sensitivity and
specificity, measured against the adjudicated hand labels::

    share = (raw + specificity - 1) / (sensitivity + specificity - 1), clipped to [0, 1]

Each dataset is corrected on its own and summarised by an unweighted mean over datasets
(per role: training or evaluation data), so no single large source dominates. Bootstrap
intervals resample both the labelled records (sensitivity, specificity) and each dataset's
records (raw share) in every replicate, so they carry both uncertainties. Written here
because no library in the stack implements Rogan–Gladen with this joint bootstrap.
"""
from __future__ import annotations

import numpy as np

from .audit import LABELS
from .audit_registry import ROLES


def rogan_gladen(raw, sensitivity, specificity):
    """Prevalence from an imperfect classifier's positive share; NaN where Se + Sp <= 1.

    >>> round(float(rogan_gladen(0.3, 0.8, 0.9)), 4)   # (0.3 + 0.9 - 1) / (0.8 + 0.9 - 1)
    0.2857
    """
    raw, se, sp = (np.asarray(v, dtype=float) for v in (raw, sensitivity, specificity))
    informative = se + sp - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(informative > 0, (raw + sp - 1) / informative, np.nan)
    return np.clip(share, 0.0, 1.0)


def _mean_of_replicates(boots) -> np.ndarray:
    """Per bootstrap replicate, the mean over a role's datasets, skipping NaN; NaN (without the
    empty-slice warning of ``np.nanmean``) where every member's resample had Se + Sp <= 1."""
    return np.ma.masked_invalid(np.vstack(boots)).mean(axis=0).filled(np.nan)


def _se_sp(gold: np.ndarray, pred: np.ndarray):
    """Sensitivity and specificity along the last axis (resampled rows on the first)."""
    pos, neg = gold == 1, gold == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        se = (pred & pos).sum(-1) / pos.sum(-1)
        sp = (~pred & neg).sum(-1) / neg.sum(-1)
    return se, sp


def corrected_shares(records, labelled, roles: dict[str, str], n_boot: int = 2000,
                     seed: int = 0, confidence: float = 0.95):
    """Rogan–Gladen shares per dataset and per role (unweighted mean over its datasets).

    Args:
        records: the creative slice with the classifier's 0/1 ``craft/audience/reality``
            and a ``dataset`` column.
        labelled: labelled creative records with the classifier's predictions in
            ``pred_<label>`` (out of fold for a fitted classifier) and final labels in
            ``<label>`` (0/1 at the headline bar).
        roles: dataset -> "training" | "evaluation".
    Returns:
        Long DataFrame[group, role, label, n, raw, sensitivity, specificity, share,
        ci_low, ci_high]; ``group`` is a dataset or "mean:<role>".
    """
    import pandas as pd
    rng = np.random.default_rng(seed)
    tail = (1 - confidence) / 2
    lab_idx = rng.integers(0, len(labelled), size=(n_boot, len(labelled)))
    datasets = list(dict.fromkeys(records.dataset))
    draws = {d: rng.integers(0, n, size=(n_boot, n))
             for d, n in records.groupby("dataset", sort=False).size().items()}
    rows, boot = [], {}
    for name in LABELS:
        gold = labelled[name].to_numpy(int)
        pred = labelled[f"pred_{name}"].to_numpy(int).astype(bool)
        se, sp = _se_sp(gold, pred)
        se_b, sp_b = _se_sp(gold[lab_idx], pred[lab_idx])
        for d in datasets:
            values = records.loc[records.dataset == d, name].to_numpy(int)
            raw, raw_b = values.mean(), values[draws[d]].mean(axis=1)
            boot[d, name] = rogan_gladen(raw_b, se_b, sp_b)
            rows.append(dict(group=d, role=roles.get(d, ""), label=name, n=len(values), raw=raw,
                             sensitivity=float(se), specificity=float(sp),
                             share=float(rogan_gladen(raw, se, sp)), boot=boot[d, name]))
    out = pd.DataFrame(rows)
    for role in dict.fromkeys(roles[d] for d in datasets):
        members = [d for d in datasets if roles[d] == role]
        for name in LABELS:
            part = out[(out.label == name) & out.group.isin(members)]
            rows.append(dict(group=f"mean:{role}", role=role, label=name, n=int(part.n.sum()),
                             raw=part.raw.mean(), sensitivity=part.sensitivity.iloc[0],
                             specificity=part.specificity.iloc[0], share=part.share.mean(),
                             boot=_mean_of_replicates(part.boot.to_list())))
    out = pd.DataFrame(rows)
    out["ci_low"] = [np.nanquantile(b, tail) for b in out.boot]
    out["ci_high"] = [np.nanquantile(b, 1 - tail) for b in out.boot]
    return out


def type_differences(shares, first: str = "craft", others=("audience", "reality"),
                     confidence: float = 0.95):
    """craft − audience and craft − reality per group, with bootstrap intervals.

    Takes ``corrected_shares`` output (its ``boot`` column: replicates drawn jointly for
    all types, so the difference's interval keeps their correlation).
    """
    import pandas as pd
    tail = (1 - confidence) / 2
    rows = []
    for group, g in shares.groupby("group", sort=False):
        by = g.set_index("label")
        for other in others:
            diff = by.at[first, "boot"] - by.at[other, "boot"]
            rows.append(dict(group=group, role=by.at[first, "role"], contrast=f"{first} - {other}",
                             difference=by.at[first, "share"] - by.at[other, "share"],
                             ci_low=np.nanquantile(diff, tail), ci_high=np.nanquantile(diff, 1 - tail)))
    return pd.DataFrame(rows)


def direction_sentence(shares, differences, role: str = "training") -> str:
    """The audit's conclusion for one role, computed from the corrected shares and their CIs.

    The paper's direction is "craft far more than audience or reality"; each contrast is
    called holding (interval above 0), reversed (below 0) or not resolved (straddles 0).
    """
    group = f"mean:{role}"
    s = shares[shares.group == group].set_index("label")
    d = differences[differences.group == group].set_index("contrast")
    if s.empty:
        return f"No {role} data was audited."
    n_sets = shares[(shares.role == role) & ~shares.group.str.startswith("mean:")].group.nunique()

    def pct(row):
        return f"{100 * row.share:.0f}% [{100 * row.ci_low:.0f}, {100 * row.ci_high:.0f}]"

    def verdict(contrast):
        lo, hi = d.at[contrast, "ci_low"], d.at[contrast, "ci_high"]
        other = contrast.split(" - ")[1]
        if lo > 0:
            return (f"craft exceeds {other}, the paper's direction (difference CI {100 * lo:+.0f} to "
                    f"{100 * hi:+.0f} points)")
        if hi < 0:
            return f"{other} exceeds craft, the reverse of the paper (CI {100 * lo:+.0f} to {100 * hi:+.0f})"
        return (f"craft vs {other} is not resolved, neither the paper's direction nor its reverse "
                f"(CI {100 * lo:+.0f} to {100 * hi:+.0f})")
    return (f"On {role} data (unweighted mean of {n_sets} datasets, shares of creative records "
            f"that teach each type, corrected for classifier error, 95% CI): craft {pct(s.loc['craft'])}, "
            f"audience {pct(s.loc['audience'])}, reality {pct(s.loc['reality'])}; "
            f"{verdict('craft - audience')}; {verdict('craft - reality')}.")


def share_table(shares, bar: str = "taught"):
    """Groups × types as "28% [11, 40]" strings: training datasets, evaluation datasets, role means."""
    part = shares[shares.bar == bar] if "bar" in shares else shares
    cells = part.assign(cell=[f"{100 * s:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"
                              for s, lo, hi in zip(part.share, part.ci_low, part.ci_high)])
    table = cells.pivot(index="group", columns="label", values="cell")[list(LABELS)]
    groups = part.drop_duplicates("group").set_index("group")
    order = [g for role in ROLES for g in groups.index if groups.role[g] == role and not g.startswith("mean:")]
    order += [f"mean:{role}" for role in ROLES]
    table = table.reindex([g for g in order if g in table.index])
    return table.assign(n=groups.n.reindex(table.index), role=groups.role.reindex(table.index))
