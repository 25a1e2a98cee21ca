"""The ``faap`` command line. Bad input ends in one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from faap.errors import UserError


def _train(args) -> None:
    from faap.config import PROVENANCE_KEYS, parse_set, read_config_file
    from faap.trainer import Run
    from faap.variants import make_config

    values = read_config_file(args.config) if args.config else {}
    recorded = {k: values.pop(k) for k in PROVENANCE_KEYS if k in values}  # a run's config.yaml: checks, not values
    variant = _train_variant(args.variant, values.pop("variant", None), args.config)
    values.update(parse_set(args.set))
    for key in ("data", "detector", "seed", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.skip_bad_images:
        values["skip_bad_images"] = True
    cfg = make_config(variant, values)
    if not cfg.data:
        raise UserError("no dataset: give --data ROOT (or 'data:' in the config file)")
    _apply_recorded(recorded, cfg.data, args)
    Run(cfg, args.out, progress=not args.quiet).fit(resume=args.resume)


def _apply_recorded(recorded: dict, data: str, args) -> None:
    """A run's recorded provenance: its dataset must be this one; its thread count is used unless
    --threads or FAAP_THREADS says otherwise (on CPU, the same numbers need the same thread count)."""
    if "dataset_fingerprint" in recorded:
        from faap.data.coco import fingerprint

        here = fingerprint(data)
        if here != recorded["dataset_fingerprint"]:
            raise UserError(f"dataset {data} has fingerprint {here}, but {args.config} was trained on "
                            f"{recorded['dataset_fingerprint']}: not the same data")
    if recorded.get("threads") and args.threads is None and not os.environ.get("FAAP_THREADS"):
        from faap.threads import configure_threads

        configure_threads(recorded["threads"], defer=True)


def _train_variant(flag: str | None, in_config: str | None, config_path: str | None) -> str:
    """--variant, else the config file's ``variant:`` (a run's config.yaml records it); both must agree."""
    if flag and in_config and flag != in_config:
        raise UserError(f"--variant {flag} but {config_path} is a '{in_config}' config")
    if not (flag or in_config):
        raise UserError("no variant: give --variant NAME (or 'variant:' in the config file)")
    return flag or in_config


def _eval(args) -> None:
    from faap.config import parse_set
    from faap.reeval import check_split, judge_generator

    if args.split is not None:
        check_split(args.split)
    if args.run:
        _eval_run(args)
        return
    for flag in ("epochs", "dump_images"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} goes with --run, not with --generator")
    missing = [f"--{k}" for k in ("data", "detector", "out") if getattr(args, k) is None]
    if missing:
        raise UserError(f"--generator needs {', '.join(missing)}")
    summary = judge_generator(args.generator, args.data, args.detector, args.out, args.eps, args.split or "test",
                              args.device, args.skip_bad_images, parse_set(args.set))
    split = summary["split"]
    print(f"{args.generator} on {split} (eps {summary['eps']:g}): AP gap {summary[split]['AP_gap']:+.4f} "
          f"(clean {summary['baseline'][split]['AP_gap']:+.4f}), AR gap {summary[split]['AR_gap']:+.4f} "
          f"(clean {summary['baseline'][split]['AR_gap']:+.4f}); written to {args.out}")


def _eval_run(args) -> None:
    """``faap eval --run``: re-evaluate one checkpoint, every chosen epoch (--epochs), or dump images."""
    from faap.reeval import evaluate_epochs, reevaluate

    for flag in ("data", "detector", "eps", "out", "set"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag} goes with --generator, not with --run (a run folder records it)")
    if args.epochs is not None and (args.epoch is not None or args.dump_images is not None):
        raise UserError(f"--epochs goes alone (not with {'--epoch' if args.epoch is not None else '--dump-images'})")
    if args.dump_images is not None:
        from faap.dump import dump_images

        index = dump_images(args.run, args.dump_images, args.split or "val", args.epoch, args.device)
        print(f"{len(index['images'])} images of {index['split']} (epoch {index['epoch']}, eps {index['eps']:g}) "
              f"written to {index['folder']} (index.json, index.csv)")
    elif args.epochs is not None:
        def show(r):
            print(f"epoch {r['epoch']} on {r['split']} (exploratory): AP gap {r['gaps']['AP']['perturbed']:+.4f} "
                  f"(clean {r['gaps']['AP']['baseline']:+.4f}), AR gap {r['gaps']['AR']['perturbed']:+.4f}", flush=True)

        from faap.rundir import RunDir

        split = args.split or "test"
        records = evaluate_epochs(args.run, args.epochs, split, args.device, report=show)
        where = os.path.dirname(RunDir(args.run).exploratory_path(split, records[0]["epoch"]))
        print(f"{len(records)} exploratory records written to {where} (choosing an epoch by them is selection "
              f"on {split})")
    else:
        print(json.dumps(reevaluate(args.run, args.epoch, args.split or "val", args.device), indent=2))


def _synth(args) -> None:
    from faap.data.synth import SynthConfig, generate

    cfg = SynthConfig(seed=args.seed, size=args.size, n_train=args.n_train, male_share=args.male_share,
                      n_val=args.n_val, n_test=args.n_test)
    if not 0 < args.female_veil <= 1:
        raise UserError(f"--female-veil must be in (0, 1] (got {args.female_veil})")
    cfg.female.veil = args.female_veil
    counts = generate(args.out, cfg, workers=args.workers)
    print(json.dumps(counts))


def _inspect(args) -> None:
    from faap.data.images import inspect

    report = inspect(args.root, decode=not args.no_decode, workers=args.workers)
    print(json.dumps(report, indent=2))
    if report["problems"]:
        raise UserError(f"{len(report['problems'])} problem(s) in {args.root}: {report['problems'][0]}")


def _oracle(args) -> None:
    from faap.oracle import oracle_effect

    if args.eps is not None and not args.eps > 0:
        raise UserError(f"--eps must be > 0 (got {args.eps})")
    if args.max_images < 0:
        raise UserError(f"--max-images must be >= 0 (got {args.max_images})")
    out = oracle_effect(args.root, args.detector, args.eps, args.split, args.max_images)
    print(json.dumps(out, indent=2))
    print(f"AP gap on {out['split']}: clean {out['clean']['AP_gap']:.3f}, with the oracle perturbation (female images, "
          f"eps {out['eps']}) {out['oracle']['AP_gap']:.3f}: change {out['AP_gap_change']:+.3f}", file=sys.stderr)


def _train_demo(args) -> None:
    from faap.detector.demo import train_demo

    print(json.dumps(train_demo(args.data, args.out, steps=args.steps, seed=args.seed), indent=2))


def _bench(args) -> None:
    from faap.bench import main as bench_main

    bench_main(args)


def _report(args) -> None:
    given = [flag for flag, v in (("STUDY", args.study), ("--legacy", args.legacy), ("--runs", args.runs),
                                  ("--program", args.program)) if v]
    if len(given) != 1:
        raise UserError("give exactly one of a study name, --legacy PATH, --runs DIR... or --program STUDY..." +
                        (f" (got {' and '.join(given)})" if given else ""))
    if args.split is not None and not args.runs:
        raise UserError("--split goes with --runs (a study report shows val and test, a program report test)")
    if args.plan_for is not None and not args.study:
        raise UserError("--plan-for goes with a study report")
    if args.program:
        from reports.program import build_program

        build_program(args.program, args.out, args.storage, args.replicates)
    elif args.legacy:
        from reports.legacy import build as build_legacy

        build_legacy(args.legacy, args.out)
    elif args.runs:
        from reports.runs import build_runs

        build_runs(args.runs, args.out, args.split or "test", args.replicates)
    else:
        from reports.build import build

        from reports.common import ORIGINAL_CLAIM

        plan_for = ORIGINAL_CLAIM if args.plan_for is None else args.plan_for
        if args.feature_images < 1:
            raise UserError(f"--feature-images must be at least 1 (got {args.feature_images})")
        build(args.study, args.storage, args.out, replicates=args.replicates, n_images=args.feature_images,
              plan_for=plan_for)
    print(f"report written to {os.path.join(args.out, 'report.md')}")


def _add_threads(p) -> None:
    """``--threads`` on a command that computes; :func:`main` applies it before torch is imported."""
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: $FAAP_THREADS, "
                   "else $OMP_NUM_THREADS, else the cores available to the process)")


class _DefaultsAndText(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the description's line breaks and show every option's default."""


SYNTH_HELP = """Write the synthetic gender-split benchmark in the original layout (women_split/, men_split/).

128 px images of striped person-like figures on textured backgrounds. Female images are
harder (lower contrast, more head-less distractors, stronger texture), rarer in train
(--male-share) and sit behind a grey veil that halves their contrast: the veil is the part
of the gap a perturbation within the benchmark's budget (eps 0.5) can undo. The folder
also gets faap_config.yaml (image sizes, budget), which training applies to it."""


def _add_train(sub) -> None:
    """``faap train``."""
    t = sub.add_parser("train", help="train one variant (one run folder)")
    t.add_argument("--variant", help="a registered variant (faap/variants/, one file each); default: the config "
                   "file's 'variant:' (a run's config.yaml re-runs as recorded)")
    t.add_argument("--data", help="dataset root")
    t.add_argument("--detector", help="'demo', a transformers folder or hub id, or a DETR .pth")
    t.add_argument("--out", required=True, help="run folder to create (or resume)")
    t.add_argument("--config", help="YAML file of config values, or a built-in name (synthetic)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config value (repeatable)")
    t.add_argument("--seed", type=int)
    t.add_argument("--device")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--skip-bad-images", action="store_true", help="leave out (and count) images that cannot be "
                   "decoded instead of stopping before training (config: skip_bad_images)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    _add_threads(t)
    t.set_defaults(func=_train)


def _add_eval(sub) -> None:
    """``faap eval``."""
    e = sub.add_parser("eval", help="re-evaluate a run's checkpoint, or judge any generator checkpoint")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run folder: re-evaluate its checkpoint, print the metrics")
    which.add_argument("--generator", help="a generator checkpoint (the suite's or the original code's .pth): "
                       "evaluate it clean and perturbed into a new run folder --out")
    e.add_argument("--epoch", type=int, help="with --run; default: the selected epoch (or the last)")
    e.add_argument("--epochs", metavar="all|E1,E2", help="with --run: evaluate each saved epoch named (default split: "
                   "test) into eval/exploratory/, marked exploratory; the run's selection is not changed")
    e.add_argument("--dump-images", type=int, metavar="N", help="with --run: write the clean, perturbed and "
                   "amplified-perturbation PNGs of the first N images per group (default split: val) to dumps/")
    e.add_argument("--split", help="train, val or test; default: val with --run (test with --epochs), "
                   "test with --generator")
    e.add_argument("--data", help="with --generator: dataset root")
    e.add_argument("--detector", help="with --generator: 'demo', a transformers folder or hub id, or a DETR .pth")
    e.add_argument("--eps", type=float, help="with --generator: the budget (required for an original checkpoint; "
                   "a suite checkpoint records its own)")
    e.add_argument("--out", help="with --generator: run folder to create (must not exist or be empty)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --generator: an evaluation setting "
                   "(eval_size, max_size, batch_size, perturb_padding, num_workers)")
    e.add_argument("--skip-bad-images", action="store_true", help="leave out undecodable images (counted) "
                   "instead of stopping")
    e.add_argument("--device", default="auto")
    _add_threads(e)
    e.set_defaults(func=_eval)


def _add_data(sub) -> None:
    """``faap data synth|inspect|oracle``."""
    d = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    s = d.add_parser("synth", help="write the synthetic benchmark", formatter_class=_DefaultsAndText, description=SYNTH_HELP)
    s.add_argument("--out", required=True, help="dataset folder to create (must not exist or be empty)")
    s.add_argument("--seed", type=int, default=0, help="seed of every random draw (same seed: byte-identical files)")
    s.add_argument("--size", type=int, default=128, help="image side in pixels")
    s.add_argument("--n-train", type=int, default=4000, help="training images over both groups")
    s.add_argument("--male-share", type=float, default=0.8, help="fraction of the training images that are male")
    s.add_argument("--n-val", type=int, default=250, help="validation images per group")
    s.add_argument("--n-test", type=int, default=300, help="test images per group")
    s.add_argument("--female-veil", type=float, default=0.5,
                   help="contrast kept by the grey veil over female images (1: no veil; the demo detector was "
                        "trained on --female-veil 1)")
    s.add_argument("--workers", type=int, default=None, help="image-writing processes (default: up to 2)")
    s.set_defaults(func=_synth)
    i = d.add_parser("inspect", help="counts, fingerprint and problems of a dataset")
    i.add_argument("root")
    i.add_argument("--workers", type=int, default=None, help="decoding processes (default: up to 8)")
    i.add_argument("--no-decode", action="store_true", help="check the annotation files only, not the images")
    i.set_defaults(func=_inspect)

    o = d.add_parser("oracle", help="positive control: AP gap with a hand-written veil-lifting perturbation (synthetic data)")
    o.add_argument("root", help="a benchmark written by 'faap data synth'")
    o.add_argument("--detector", default="demo")
    o.add_argument("--eps", type=float, help="budget (default: the dataset's eps_peak)")
    o.add_argument("--split", default="test", choices=["train", "val", "test"])
    o.add_argument("--max-images", type=int, default=0, help="images per group (0: all)")
    _add_threads(o)
    o.set_defaults(func=_oracle)


def _add_detector(sub) -> None:
    """``faap detector train-demo``."""
    det = sub.add_parser("detector", help="detectors").add_subparsers(dest="detector_command", required=True)
    td = det.add_parser("train-demo", help="train the demo detector on a synthetic benchmark")
    td.add_argument("--data", required=True)
    td.add_argument("--out", required=True)
    td.add_argument("--steps", type=int, default=6000)
    td.add_argument("--seed", type=int, default=0)
    _add_threads(td)
    td.set_defaults(func=_train_demo)


def _add_bench(sub) -> None:
    """``faap bench``."""
    b = sub.add_parser("bench", help="training-step time of each variant relative to a bare detector step")
    b.add_argument("--detector", default="demo", help="'demo', a hub id, a folder or an original DETR .pth "
                   "(default: demo)")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    b.add_argument("--batch-size", type=int, default=8, help="images per step, half per group (default: 8)")
    b.add_argument("--image-size", type=int, default=128, help="square image side in pixels (default: 128)")
    b.add_argument("--steps", type=int, default=20, help="timed steps per row; the median is reported (default: 20)")
    b.add_argument("--warmup", type=int, default=3, help="untimed steps before each row (default: 3)")
    b.add_argument("--variants", metavar="A,B", help="time only these registered variants (default: all)")
    b.add_argument("--amp", default="none", choices=["none", "bf16"], help="bf16 autocast on CUDA (default: none)")
    b.add_argument("--channels-last", action="store_true", help="NHWC convolutions in G (config: channels_last)")
    b.add_argument("--g-checkpointing", action="store_true", help="activation checkpointing of G's blocks "
                   "(config: g_checkpointing)")
    b.add_argument("--compile-g", action="store_true", help="torch.compile G (runs eagerly, with a warning, where "
                   "it cannot be compiled)")
    b.add_argument("--out", help="also write the table to this file")
    _add_threads(b)
    b.set_defaults(func=_bench)


def _add_report(sub) -> None:
    """``faap report``."""
    r = sub.add_parser("report", help="markdown report of a study, of legacy result folders, comparing run folders, "
                       "or a program of studies against the 7th")
    r.add_argument("study", nargs="?", help="study name")
    r.add_argument("--storage", help="journal file path or RDB URL (default: runs/studies/journal.log); with "
                   "--program, of every study not given as STUDY@URL")
    r.add_argument("--legacy", help="an original codebase's faap_outputs folder instead of a study")
    r.add_argument("--runs", nargs="+", metavar="DIR|LABEL=DIR1,DIR2",
                   help="run folders (from 'faap eval --generator' or 'faap train') to compare with each other and "
                        "the clean detector; LABEL=DIR1,DIR2,... makes several seed runs one condition")
    r.add_argument("--program", nargs="+", metavar="STUDY|STUDY@URL",
                   help="studies of different ideas: each one's best trial against the 7th (run by the first study "
                        "that ran it) and the clean detector on the same test images, Holm-adjusted; STUDY@URL reads "
                        "a study from its own storage (others: --storage)")
    r.add_argument("--split", help="with --runs: the split the runs were evaluated on (default: test)")
    r.add_argument("--out", required=True, help="report folder (report.md, figures/)")
    r.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates")
    r.add_argument("--feature-images", type=int, default=64, metavar="N",
                   help="study report: validation images per group for the feature diagnostics, the hypotheses and "
                        "the feature space (default: 64; the pass runs the detector on each twice or more)")
    r.add_argument("--plan-for", type=float, metavar="SIZE",
                   help="study report: the change in AP gap the seed/image plan sizes a study for (default: the "
                        "size of the original study's claimed change)")
    _add_threads(r)
    r.set_defaults(func=_report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faap", description="Fairness perturbations for frozen DETR-family detectors.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_data, _add_detector, _add_bench):
        add(sub)
    from ablations.cli import add_parser as add_sweep

    add_sweep(sub)
    _add_report(sub)
    return p


def main(argv=None) -> int:
    # A process started in the background by a non-interactive shell inherits SIGINT as ignored;
    # Ctrl-C / SIGINT must still stop a run cleanly (and re-queue a sweep's running trial).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    try:
        if "threads" in vars(args):  # a command that computes (the sweep worker's --threads too)
            from faap.threads import configure_threads

            configure_threads(args.threads, defer=True)  # the line comes when the first network runs
        args.func(args)
    except UserError as e:
        # A DataLoader worker re-raises a worker's error with its traceback in the message: keep the last line.
        lines = str(e).strip().splitlines() or [""]
        print(f"faap: error: {lines[-1].split('Error: ', 1)[-1] if len(lines) > 1 else lines[0]}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("faap: interrupted", file=sys.stderr)
        return 130
    finally:
        from faap.threads import end_announcement

        end_announcement()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
