"""``faap report --program STUDY [STUDY ...] --out DIR``: which of our ideas beat the 7th?

One table on the same test images: the clean detector, the 7th (the adversarial baseline) and the
best trial of each study (one study per idea, usually per variant; picked on val by the study's own
objective, as its study report does). For each: its test AP gap and mean AP with 95% intervals, its
AP-gap difference from the 7th with the hierarchical paired interval (images shared by every
condition, seeds drawn within each: :func:`analysis.bootstrap.bootstrap_gap`), the bootstrap p,
Holm-adjusted across the studies' best trials, the smallest detectable difference (the interval's
half-width) and a one-line verdict.

A study is ``NAME`` (in ``--storage``, default the embedded journal) or ``NAME@URL`` (a study in a
storage of its own; the name ends at the first ``@``, so a name holding ``@`` cannot be given this way).

Whose runs: the 7th's are those of the first study that ran it (the report says which, and names
other studies whose own 7th runs it did not use); the clean detector's are the first study's cached
clean detections on test.

Refused with one line, exit status 2, nothing written (every input is checked before the output
folder is made): an unknown study or one without a completed trial, a study given twice, no study
having run the 7th, and studies whose runs differ in data (dataset fingerprint), detector
(``detector_id``) or evaluation settings: the line names the two studies and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from analysis.bootstrap import bootstrap_gap, holm
from analysis.study import Condition, StudyData, load_study_data
from faap.errors import UserError
from faap.rundir import RunDir
from reports import figures
from reports.build import ranked_trials
from reports.common import (CLEAN_LABEL, ORIGINAL_CLAIM, Section, claim_sentence, claim_unresolved, condition_label, fmt_ci,
                            fmt_interval, fmt_signed, match_tables, run_sections, verdict_word, write_report)
from reports.runs import CONFIG_FIELDS, SUMMARY_FIELDS

SEVENTH = "adversarial"
"""The baseline variant every idea is measured against: the original code's 7th."""
SPLIT = "test"
"""The program compares each study's selected checkpoints where they were evaluated once: on test."""


@dataclass
class Member:
    """One study of the program: its loaded data and its best trial."""

    name: str
    url: str | None
    data: StudyData
    best: Condition

    @property
    def key(self) -> str:
        """The best trial's condition name in the program's bootstrap (unique across studies)."""
        return f"{self.name}: {self.best.name}"

    @property
    def label(self) -> str:
        return condition_label(self.best.name, self.best.params, self.data.spec.variant)


@dataclass
class ProgramContext:
    members: list[Member]
    out_dir: str
    replicates: int
    seventh: Member
    """The study whose 7th runs the program uses."""
    clean_path: str = ""
    boot: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Found while loading; printed at the top."""

    @property
    def first(self) -> Member:
        return self.members[0]

    def label(self, key: str) -> str:
        if key in ("clean", SEVENTH):
            return condition_label(key)
        return next(m.label for m in self.members if m.key == key)

    def difference(self, key: str) -> dict:
        """``key - 7th`` in test AP gap, with its interval and p."""
        return self.boot["differences"][f"{key} - {SEVENTH}"]["AP_gap"]

    @property
    def holm(self) -> dict:
        """Holm-adjusted p of each best trial against the 7th, across the program's studies."""
        return holm({m.key: self.difference(m.key)["p_two_sided"] for m in self.members})


def parse_program(specs: list[str], url: str | None) -> list[tuple[str, str | None]]:
    """``NAME`` or ``NAME@URL`` -> (name, storage URL), in the order given; one line on a bad or repeated one."""
    out: list[tuple[str, str | None]] = []
    for spec in specs:
        name, sep, own = spec.partition("@")
        if not name or (sep and not own):
            raise UserError(f"--program {spec!r}: give a study as NAME or NAME@STORAGE_URL")
        if name in [n for n, _ in out]:
            raise UserError(f"--program: study '{name}' is given twice (give each study once)")
        out.append((name, own if sep else url))
    return out


def _member(name: str, url: str | None) -> Member:
    data = load_study_data(name, url)
    return Member(name, url, data, ranked_trials(data)[0])


def _seventh(members: list[Member]) -> tuple[Member, list[str]]:
    """The first study that ran the 7th, and notes on the other studies' own 7th runs."""
    ran = [m for m in members if m.data.conditions.get(SEVENTH) and m.data.conditions[SEVENTH].runs]
    if not ran:
        raise UserError(f"no study of the program ran the 7th ({SEVENTH} baseline) to compare with: add "
                        f"'{SEVENTH}' to the baselines of one (e.g. study '{members[0].name}')")
    used, notes = ran[0], []
    if used is not members[0]:
        notes.append(f"Study '{members[0].name}' did not run the 7th; the report uses the runs of study '{used.name}'.")
    runs = sorted(used.data.conditions[SEVENTH].runs)
    others = [m for m in ran[1:] if sorted(m.data.conditions[SEVENTH].runs) != runs]
    if others:
        notes.append("Other studies ran their own 7th (" + ", ".join(
            f"'{m.name}': {len(m.data.conditions[SEVENTH].runs)} runs" for m in others) + f"); this report uses "
            f"only the {len(runs)} runs of study '{used.name}'.")
    return used, notes


def _recorded(run: str) -> dict:
    """What must agree between the program's runs: summary fields and evaluation settings."""
    rd = RunDir(run)
    summary, config = rd.read_summary(), rd.read_config()
    return {**{k: summary.get(k) for k in SUMMARY_FIELDS}, **{k: config.get(k) for k in CONFIG_FIELDS}}


def check_comparable(members: list[Member], seventh: Member) -> None:
    """Every run the program reads (each best trial's, the 7th's) has the first one's data, detector and
    evaluation settings; else one line naming the two studies and the field."""
    runs = [(m.name, r) for m in members for r in m.best.runs]
    runs += [(seventh.name, r) for r in seventh.data.conditions[SEVENTH].runs]
    first_study, first = runs[0][0], _recorded(runs[0][1])
    for study, run in runs[1:]:
        got = _recorded(run)
        for key, value in first.items():
            if got[key] != value:
                who = (f"the runs of study '{study}'" if study == first_study
                       else f"studies '{first_study}' and '{study}'")
                raise UserError(f"{who} differ in {key} ({value!r} vs {got[key]!r}): their {SPLIT} results are not "
                                "comparable")


def _clean_path(member: Member) -> str:
    run = member.best.runs[0]
    path = RunDir(run).read_summary().get("clean_detections", {}).get(SPLIT)
    if not path or not os.path.isfile(path):
        raise UserError(f"the clean detector's {SPLIT} detections of study '{member.name}' ({path}) do not exist any "
                        f"more; re-run 'faap eval --run {run} --split {SPLIT}' to recompute them")
    return path


def load_program(specs: list[str], url: str | None, out_dir: str, replicates: int) -> ProgramContext:
    """Every input checked (one-line errors) and the bootstrap computed; nothing is written here."""
    if replicates < 10:
        raise UserError(f"--replicates must be at least 10 (got {replicates})")
    members = [_member(name, where) for name, where in parse_program(specs, url)]
    seventh, notes = _seventh(members)
    check_comparable(members, seventh)
    ctx = ProgramContext(members, out_dir, replicates, seventh, _clean_path(members[0]), notes=notes)
    sources = {"clean": [ctx.clean_path],
               SEVENTH: [RunDir(r).detections_path(SPLIT) for r in seventh.data.conditions[SEVENTH].runs],
               **{m.key: [RunDir(r).detections_path(SPLIT) for r in m.best.runs] for m in members}}
    try:
        ctx.boot = bootstrap_gap(*match_tables(ctx.first.data.spec.data, SPLIT, sources), replicates=replicates)
    except ValueError as e:
        raise UserError(f"the studies cannot be paired on {SPLIT}: {e}") from None
    return ctx


def verdict_line(ctx: ProgramContext, m: Member) -> dict:
    """The one-line verdict of a best trial against the 7th, its interval's word and the Holm-adjusted p."""
    d, adjusted = ctx.difference(m.key), ctx.holm[m.key]
    word, level = verdict_word(d), ctx.boot["level"]
    beats = word.startswith("better") and adjusted < 1 - level
    text = (f"{m.label} (study '{m.name}'): {fmt_signed(d['value'])} {fmt_interval(d)} against the 7th, "
            f"Holm p {adjusted:.3f} -> ")
    if word != "not distinguishable" and adjusted < 1 - level:
        text += "**beats the 7th**" if beats else "**worse than the 7th**"
    elif word != "not distinguishable":
        text += (f"**not distinguishable after Holm** (its own interval alone says {word}; not once adjusted "
                 f"across the {len(ctx.members)} ideas)")
    else:
        text += "**not distinguishable**"
    if not beats and claim_unresolved(d["half_width"]):
        text += (f"; its half-width {d['half_width']:.3f} is wider than the original claim's change "
                 f"({ORIGINAL_CLAIM:.3f}), so a change of that size would go unseen")
    return {"study": m.name, "condition": m.best.name, "label": m.label, "difference": d, "word": word,
            "holm_p": adjusted, "beats_7th": beats, "text": text}


def _row(ctx: ProgramContext, key: str, study: str) -> tuple[str, dict]:
    c = ctx.boot["conditions"][key]
    seeds = "-" if key == "clean" else str(c["runs"])
    row = {"condition": key, "label": ctx.label(key), "study": study, "runs": c["runs"], "AP_gap": c["AP_gap"],
           "AP_mean": c["AP_mean"]}
    cells = f"| {ctx.label(key)} | {study} | {seeds} | {fmt_ci(c['AP_gap'])} | {fmt_ci(c['AP_mean'])} |"
    if key in ("clean", SEVENTH):
        return cells + (" reference | - | - | - | - |" if key == SEVENTH else " - | - | - | - | - |"), row
    d, adjusted = ctx.difference(key), ctx.holm[key]
    row.update(difference=d, holm_p=adjusted)
    return cells + (f" {fmt_signed(d['value'])} {fmt_interval(d)} | {d['half_width']:.3f} | {d['p_two_sided']:.3f} | "
                    f"{adjusted:.3f} | {verdict_word(d)} |"), row


def table_section(ctx: ProgramContext) -> Section:
    lines = ["## The ideas against the 7th, on the same test images", "",
             "| condition | study | seeds | test AP gap [95% CI] | test mean AP [95% CI] | AP gap - 7th [95% CI] | "
             "half-width | p | Holm p | interval |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    for key, study in [("clean", ctx.first.name), (SEVENTH, ctx.seventh.name)] + [(m.key, m.name) for m in ctx.members]:
        line, row = _row(ctx, key, study)
        lines.append(line)
        rows.append(row)
    forest = [{"label": ctx.label(m.key), "value": ctx.difference(m.key)["value"], "ci": ctx.difference(m.key)["ci"]}
              for m in ctx.members]
    fig = figures.forest(forest, ctx.out_dir, "program_differences.png", "test AP gap - 7th (negative: smaller gap)")
    lines += ["", f"Holm: p-values adjusted over the {len(ctx.members)} best trials against the 7th (family-wise "
              "error 5%). Half-width: the smallest difference each comparison could detect.", "",
              f"![test AP gap difference from the 7th]({fig})", ""]
    return Section(lines, {"rows": rows, "holm": ctx.holm})


def verdict_section(ctx: ProgramContext) -> Section:
    verdicts = [verdict_line(ctx, m) for m in ctx.members]
    won = [v["label"] for v in verdicts if v["beats_7th"]]
    answer = (f"**{', '.join(won)}** beat{'s' if len(won) == 1 else ''} the 7th on test" if won else
              f"None of the {len(ctx.members)} ideas beats the 7th on test")
    base = ctx.boot["differences"][f"{SEVENTH} - clean"]["AP_gap"]
    tightest = min(v["difference"]["half_width"] for v in verdicts)
    lines = ["## Which idea beat the 7th?", "", f"{answer} (interval of the AP-gap difference below zero and "
             "Holm-adjusted p < 0.05).", ""] + [f"- {v['text']}." for v in verdicts] + [
        "", f"For scale: the 7th against the {CLEAN_LABEL}, {fmt_signed(base['value'])} {fmt_interval(base)} -> "
        f"{verdict_word(base)}. The tightest comparison's half-width is {tightest:.3f}. {claim_sentence(tightest)}.", ""]
    return Section(lines, {"verdicts": verdicts, "beat_the_7th": won,
                           "seventh_vs_clean": {"difference": base, "word": verdict_word(base)}})


def studies_section(ctx: ProgramContext) -> Section:
    lines = ["## Studies", "", "| study | storage | variant | best trial (on val) | objective | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    found = []
    for m in ctx.members:
        objective = m.data.spec.objectives[0]
        lines.append(f"| {m.name} | {m.url or 'embedded journal'} | {m.data.spec.variant} | {m.label} | "
                     f"{objective['metric']} ({objective['direction']}) {m.best.value:.4f} | {len(m.best.runs)} |")
        found.append({"study": m.name, "storage": m.url, "variant": m.data.spec.variant, "best": m.best.name,
                      "params": m.best.params, "objective": objective, "value": m.best.value, "runs": m.best.runs})
    seventh = ctx.seventh.data.conditions[SEVENTH].runs
    lines += ["", f"The 7th's runs, from study '{ctx.seventh.name}' ({len(seventh)}): "
              + ", ".join(f"`{r}`" for r in seventh) + f". The {CLEAN_LABEL}'s detections: `{ctx.clean_path}`.", "",
              "Each study's own report: " + "; ".join(
                  f"`faap report {m.name}" + (f" --storage {m.url}" if m.url else "") + " --out DIR`"
                  for m in ctx.members) + ".", ""]
    return Section(lines, {"studies": found, "seventh": {"study": ctx.seventh.name, "runs": seventh}})


SECTIONS = [verdict_section, table_section, studies_section]
"""The program report's sections, in order: each ``(ctx) -> Section``."""


def header(ctx: ProgramContext) -> list[str]:
    rec, boot = _recorded(ctx.first.best.runs[0]), ctx.boot
    settings = ", ".join(f"{k} {rec[k]}" for k in CONFIG_FIELDS)
    return ["# Program report: which of our ideas beat the 7th?", "",
            f"{len(ctx.members)} studies ({', '.join(m.name for m in ctx.members)}): each one's best trial, picked on "
            "val by its study's own objective, against the 7th (adversarial baseline) and the clean detector on the "
            f"same **{SPLIT}** images ({boot['images']['male']} male and {boot['images']['female']} female); dataset "
            f"fingerprint `{rec['dataset_fingerprint']}`, detector `{rec['detector_id']}`, {settings}. AP values are "
            f"fractions in [0, 1]; a gap is male minus female. Intervals are 95% hierarchical paired bootstraps "
            f"({ctx.replicates} replicates): each replicate redraws the images, the same draw for every condition, and "
            "within each condition its seeds (widened to a t-interval for the number of seeds); a condition's value "
            "is the mean over its seeds.", ""]


def build_program(specs: list[str], out_dir: str, url: str | None = None, replicates: int = 1000) -> dict:
    """Check every study, bootstrap, and only then write OUT/report.md, report.json and figures/."""
    ctx = load_program(specs, url, out_dir, replicates)
    body = run_sections(SECTIONS, ctx)
    notes = ctx.notes + list(body.warnings)
    rec = _recorded(ctx.first.best.runs[0])
    report = {"split": SPLIT, **rec, "clean_detections": ctx.clean_path, "replicates": replicates,
              "bootstrap": ctx.boot, **body.data, "notes": notes}
    write_report(out_dir, header(ctx) + [f"> Note: {n}" for n in notes] + ([""] if notes else []) + body.lines, report)
    return report
