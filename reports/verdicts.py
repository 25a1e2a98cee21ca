"""The study report's verdict sections: the best trial against the reference and the reference against
the clean detector (with the smallest detectable difference, the seed/image plan for a claim's size and the
null check), the positive control on the synthetic benchmark, and a one-factor study's levels.

Each is a section of :data:`reports.build.SECTIONS`: ``(ctx) -> Section``, reading the report context's
bootstrap (``ctx.report["splits"]``) and never writing into it.
"""

from __future__ import annotations

from analysis.bootstrap import bootstrap_gap, holm, match_table
from analysis.plan import Components, plan
from faap.data.coco import load_split
from faap.oracle import oracle_detections
from reports.common import (Section, claim_sentence, fmt_ci, fmt_interval, fmt_param, fmt_signed, verdict_word)


def _difference_line(ctx, split: str, a: str, b: str) -> tuple[str, dict]:
    r = ctx.report["splits"][split]
    d = r["differences"][f"{a} - {b}"]["AP_gap"]
    runs = (f"{d['runs'][0]} seeds, compared seed by seed" if d.get("paired_seeds") else
            " and ".join(f"{n} seed{'s' if n > 1 else ''}" for n in d["runs"]))
    text = (f"{ctx.label(a)} AP gap {r['conditions'][a]['AP_gap']['value']:.3f} vs {ctx.label(b)} "
            f"{r['conditions'][b]['AP_gap']['value']:.3f}: difference {fmt_signed(d['value'])}, 95% CI "
            f"{fmt_interval(d)} ({runs}; {r['images']['male']} + {r['images']['female']} images) "
            f"-> **{verdict_word(d)}**")
    return text, d


def verdict(ctx) -> Section:
    lines, data = ["## Verdict", ""], {}
    pairs = [(ctx.best.name, ctx.ref)] + ([(ctx.ref, "clean")] if ctx.ref != "clean" else [])
    for split in ("val", "test"):
        for a, b in pairs:
            text, d = _difference_line(ctx, split, a, b)
            who = f"best {ctx.spec.variant} trial" if a == ctx.best.name else "reference against the clean detector"
            lines.append(f"- **{split}**, {who}: {text}.")
            key = f"verdict_{split}" if a == ctx.best.name else f"verdict_reference_vs_clean_{split}"
            data[key] = {"difference": d, "word": verdict_word(d)}
    half = data["detectable_difference"] = data["verdict_test"]["difference"]["half_width"]
    lines += ["", f"Smallest difference this study could detect on test (half-width of the verdict's interval): "
              f"**{half:.3f}**. {claim_sentence(half)}.", "",
              "The best trial is picked by its validation value, so its val comparison is optimistic; the "
              "test comparison is the one to trust.", ""]
    verdict = data["verdict_test"]["difference"]
    data["plan"] = plan(Components.from_dict(verdict["components"]), ctx.plan_for, measured=verdict["half_width"])
    lines += [_plan_line(data["plan"]), ""]
    null = _null_check(ctx)
    return Section(lines + null.lines, {**data, **null.data}, null.warnings)


def _plan_line(p: dict) -> str:
    """What a study would need for the verdict's 95% half-width to reach ``p['target']`` (analysis/plan.py)."""
    c, target = p["components"], p["target"]
    head = f"Plan for a change of {target:.3f}: "
    if p["half_width_now"] is None:
        return head + ("the seed noise needs at least two seeds per condition to be estimated, so no seed or image "
                       "count can be given.")
    seeds = (f"**{p['seeds_needed']} seeds** per condition at these {c['images']} test images" if p["seeds_needed"]
             else f"no number of seeds (up to 1000) at these {c['images']} test images")
    images = (f"**{p['images_needed']} test images** at these seeds ({c['runs_a']} and {c['runs_b']})"
              if p["images_needed"] else "no number of test images at these seeds (their seed noise alone is wider)")
    return (head + f"the verdict's 95% half-width would reach it with {seeds}, or with {images} (now "
            f"{p['half_width_now']:.3f}; from the bootstrap's variance components: between seeds "
            f"{c['seed_a']:.2e} and {c['seed_b']:.2e}, run-by-image {c['noise_a']:.2e} and {c['noise_b']:.2e}, "
            f"shared images {c['image']:.2e}).")


def _null_check(ctx) -> Section:
    """Negative control: the reference baseline's seeds split in halves must not be distinguishable."""
    ref = ctx.ref
    if ref == "clean" or len(ctx.data.conditions[ref].runs) < 2:
        return Section(["(Null check skipped: it needs a reference baseline with at least two seeds.)", ""])
    male, female = ctx.tables["test"]
    n = len(male[ref])
    halves = {"first half": slice(0, n // 2), "second half": slice(n // 2, n)}
    split = ({h: male[ref][s] for h, s in halves.items()}, {h: female[ref][s] for h, s in halves.items()})
    d = bootstrap_gap(*split, replicates=ctx.replicates)["differences"]["first half - second half"]["AP_gap"]
    seeds = ctx.spec.seeds_of(baseline=True)  # the reference is a baseline variant here
    word = verdict_word(d)
    data = {"null_check": {"difference": d, "word": word, "halves": [seeds[: n // 2], seeds[n // 2:]]}}
    text = (f"the {ctx.label(ref)}'s seeds {seeds[: n // 2]} against its seeds {seeds[n // 2:]} on test: difference "
            f"{fmt_signed(d['value'])}, 95% CI {fmt_interval(d)} -> {word}")
    warned = ()
    if word != "not distinguishable":
        single = " With one seed per half the interval cannot hold seed noise, so this measures it:" if n < 4 else ""
        warned = (f"> **Warning: the null check failed.** {text[0].upper() + text[1:]}, although both halves "
                  f"are the same condition.{single} seed-to-seed variation is larger than the image noise, "
                  "and intervals resting on few seeds understate it. Run more seeds before trusting a verdict.",)
    return Section([f"Null check (negative control): {text}.", ""], data, warned)


def control_section(ctx) -> Section:
    """Positive control on the synthetic benchmark: the oracle perturbation's change of the test AP gap
    (same eps as the best run, same test images) next to the reference's and the best trial's."""
    groups = load_split(ctx.spec.data, "test")
    if not groups["female"].coco.get("info", {}).get("synth_config"):
        return Section([])  # real data: there is no oracle to compare with
    summary = ctx.data.run_summary(ctx.best.runs[0])
    oracle = oracle_detections(ctx.spec.data, ctx.spec.detector, summary["eps"], "test")
    male, female = ctx.tables["test"]
    names = list(dict.fromkeys(["clean", ctx.ref, ctx.best.name]))
    table = match_table(groups["female"].coco, oracle["female"], oracle["image_ids"]["female"])
    boot = bootstrap_gap({**{c: male[c] for c in names}, "oracle": male["clean"]},
                         {**{c: female[c] for c in names}, "oracle": [table]}, replicates=ctx.replicates)
    closable = boot["differences"]["oracle - clean"]["AP_gap"]
    lines = ["## Positive control (synthetic benchmark)", "",
             f"The benchmark veils the female images; a hand-written perturbation within the same budget (eps "
             f"{oracle['eps']:.3f}, female images only) lifts the veil. Its change is what this benchmark lets a "
             "perturbation close; each condition's change is measured against the clean detector on the same test "
             "images.", "", "| condition | test AP gap [95% CI] | change vs clean [95% CI] | share of the oracle's change |",
             "| --- | --- | --- | --- |"]
    rows = {}
    for cname in ["oracle"] + names[1:]:
        d = boot["differences"][f"{cname} - clean"]["AP_gap"]
        share = d["value"] / closable["value"] if closable["value"] else float("nan")
        rows[cname] = {"change": d, "share": share}
        who = "oracle perturbation" if cname == "oracle" else ctx.label(cname)
        lines.append(f"| {who} | {fmt_ci(boot['conditions'][cname]['AP_gap'])} | {fmt_signed(d['value'])} "
                     f"{fmt_interval(d)} | {share:.0%} |")
    lines += ["", "(The share is the ratio of the two point estimates.)", ""]
    warned = ()
    if closable["ci"][1] >= 0:
        warned = ("> **Warning: the positive control cannot fire.** The oracle perturbation does not shrink the test "
                  f"AP gap distinguishably ({fmt_signed(closable['value'])} {fmt_interval(closable)}).",)
    return Section(lines, {"positive_control": {"eps": oracle["eps"], "veil": oracle["veil"], **rows}}, warned)


def factor_section(ctx) -> Section:
    """A one-factor study (one parameter, two or more levels): does the factor change the test AP gap? Each
    level against the lowest one, with its interval, Holm-adjusted p, and the smallest change it could see."""
    params = [p.name for p in ctx.spec.params]
    if len(params) != 1 or len(ctx.trials) < 2:
        return Section([])
    name = params[0]
    levels = sorted(ctx.trials, key=lambda c: c.params[name])
    base, test = levels[0], ctx.report["splits"]["test"]["differences"]
    diffs = {c.name: test[f"{c.name} - {base.name}"]["AP_gap"] for c in levels[1:]}
    adj = holm({c: d["p_two_sided"] for c, d in diffs.items()})
    lines = [f"## The factor: {name}", "", f"Each level of `{name}` against {name} {fmt_param(base.params[name])} "
             f"({ctx.label(base.name)}), test AP gap; p-values Holm-adjusted over {len(diffs)} comparison(s).", "",
             "| level | difference [95% CI] | seeds | Holm p | smallest change it could see | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    found = {}
    for c in levels[1:]:
        d = diffs[c.name]
        word = verdict_word(d)
        found[c.name] = {"level": c.params[name], "difference": d, "holm_p": adj[c.name], "word": word}
        seeds = f"{d['runs'][0]}, paired" if d.get("paired_seeds") else f"{d['runs'][0]} vs {d['runs'][1]}"
        lines.append(f"| {ctx.label(c.name)} | {fmt_signed(d['value'])} {fmt_interval(d)} | {seeds} | "
                     f"{adj[c.name]:.3f} | {d['half_width']:.3f} | {word} |")
    changed = [c for c, f in found.items() if f["word"] != "not distinguishable" and f["holm_p"] < 0.05]
    lines += ["", (f"`{name}` changes the test AP gap at {', '.join(ctx.label(c) for c in changed)}." if changed else
                   f"No level of `{name}` changes the test AP gap distinguishably: a change smaller than the half-widths "
                   "above could have gone unseen."), ""]
    return Section(lines, {"factor": {"parameter": name, "base": base.name, "levels": found}})
