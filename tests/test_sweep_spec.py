"""Study specs: every shipped spec is valid; bad specs stop with one line, exit 2, nothing stored."""

import glob
import os
import subprocess
import sys

import pytest
import yaml

from ablations.spec import SpecError, load_spec, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "sweeps", "*.yaml"))))
def test_shipped_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.sampler in ("grid", "random", "tpe", "nsga2")
    if spec.sampler == "grid":
        assert len(spec.grid()) <= spec.n_trials


def test_shipped_specs_cover_the_questions():
    names = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "sweeps", "*.yaml"))}
    for needed in ("demo", "temperature", "asymmetry", "loss_weights", "augmentation", "projection", "joint_tpe",
                   "pareto_nsga2"):
        assert needed in names, needed


BASE = {"study": "s", "variant": "infonce", "search_space": {"temperature": {"type": "float", "low": 0.05, "high": 0.5}},
        "objectives": [{"metric": "AP_gap"}], "n_trials": 4}


@pytest.mark.parametrize("change,message", [
    ({"search_space": {"temprature": {"type": "float", "low": 0.1, "high": 0.2}}},
     "unknown parameter 'temprature' for variant 'infonce' (did you mean 'temperature'?)"),
    ({"search_space": {"temperature": {"type": "float", "low": 0.5, "high": 0.1}}}, "needs numeric low < high"),
    ({"search_space": {"temperature": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "a log range needs low > 0"),
    ({"search_space": {"temperature": {"type": "float", "low": -1.0, "high": 0.1}}}, "temperature must be > 0"),
    ({"search_space": {"temperature": {"type": "grid", "values": [0.1, 0.2, 0.3]}}, "sampler": "grid", "n_trials": 2},
     "the grid has 3 points but n_trials is 2"),
    ({"sampler": "bayes"}, "unknown sampler 'bayes'"),
    ({"pruner": "medain"}, "unknown pruner 'medain'"),
    ({"objectives": [{"metric": "AP_gap"}, {"metric": "AP_mean"}], "pruner": "median"}, "cannot prune multi-objective"),
    ({"variant": "infonse"}, "unknown variant 'infonse' (did you mean 'infonce'?)"),
    ({"sampler": "grid"}, "sampler grid needs listed values"),
    ({"fixed": {"epochs": 0}}, "fixed: epochs must be > 0"),
    ({"seeds": [1, 1]}, "seeds must be a non-empty list of distinct ints"),
    ({"reference_seeds": [1, 1]}, "reference_seeds must be a non-empty list of distinct ints"),
    ({"reference_seeds": []}, "reference_seeds must be a non-empty list of distinct ints"),
    ({"reference_seeds": [1, 2], "baselines": ["clean"]}, "reference_seeds needs a baseline variant"),
    ({"n_trail": 3}, "unknown key 'n_trail' (did you mean 'n_trials'?)"),
    ({"constraints": [{"metric": "AP_gap_drop", "max": 0.1}]},  # a gap is minimised: it has no drop to bound
     "a constraint is {metric: one of AP_mean_drop, AP_female_drop, AP_male_drop, max: number}"),
])
def test_bad_specs(change, message):
    with pytest.raises(SpecError) as e:
        parse_spec({**BASE, **change}, "x.yaml")
    assert str(e.value).startswith("x.yaml: ") and message in str(e.value), str(e.value)


def test_reference_seeds_default_to_the_trials_and_go_to_baselines_only():
    spec = parse_spec({**BASE, "seeds": [1, 2]})
    assert spec.seeds_of(baseline=True) == spec.seeds_of(baseline=False) == [1, 2]
    spec = parse_spec({**BASE, "seeds": [1, 2], "reference_seeds": [1, 2, 3, 4, 5]})
    assert spec.seeds_of(baseline=True) == [1, 2, 3, 4, 5] and spec.seeds_of(baseline=False) == [1, 2]


def test_auto_sampler_and_grid_expansion():
    grid = parse_spec({**BASE, "sampler": "auto", "search_space": {
        "temperature": {"type": "grid", "values": [0.07, 0.2]}, "aug_strength": {"type": "grid", "values": ["none", "strong"]}}})
    assert grid.sampler == "grid" and len(grid.grid()) == 4
    assert parse_spec({**BASE, "objectives": [{"metric": "AP_gap"}, {"metric": "AP_mean"}]}).sampler == "nsga2"
    assert parse_spec(BASE).sampler == "tpe"


def test_constraints_come_from_the_metric_registry():
    from faap.metrics import constraints

    for name in constraints():
        assert parse_spec({**BASE, "constraints": [{"metric": name, "max": 0.02}]}).constraints == [
            {"metric": name, "max": 0.02}]


def test_cli_bad_spec_writes_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "search_space": {"temprature": {"type": "float", "low": 0.1, "high": 0.2}}}))
    journal = tmp_path / "studies" / "journal.log"
    env = {**os.environ, "PYTHONPATH": ROOT, "FAAP_RUNS": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", "run", str(spec), "--storage", str(journal)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("faap: error:")]
    assert len(errors) == 1 and "did you mean 'temperature'" in errors[0]
    assert not journal.exists() and not (tmp_path / "runs").exists()
    r = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", "status", "nope", "--storage", str(journal)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "no study storage" in r.stderr


def test_dashboard_binds_to_localhost(tmp_path, monkeypatch):
    import optuna_dashboard

    from ablations.cli import _dashboard

    seen = {}
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: seen.update(host=host, port=port))
    journal = tmp_path / "journal.log"
    from ablations.storage import open_storage

    open_storage(str(journal))
    journal.touch()

    class Args:
        storage, port = str(journal), 8123

    _dashboard(Args)
    assert seen == {"host": "127.0.0.1", "port": 8123}
