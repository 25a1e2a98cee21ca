"""Config resolution and the one-line errors of bad input."""

import os
import subprocess
import sys

import pytest

from faap.config import TrainConfig, bounds_of, field_names, parse_set
from faap.errors import ConfigError
from faap.variants import VARIANTS, make_config
from faap.variants.base import REGISTRY, Variant


def _breaking(bounds: dict):
    """A value outside ``bounds`` and the words the error must hold."""
    if "choices" in bounds:
        return "no-such-choice", "must be one of"
    if "gt" in bounds:
        return bounds["gt"] - 1, f"must be > {bounds['gt']}"
    if "le" in bounds and "ge" in bounds:
        return bounds["le"] + 1, f"must be in [{bounds['ge']}, {bounds['le']}]"
    return bounds["ge"] - 1, f"must be >= {bounds['ge']}"


def _own_bounded(name: str) -> list[str]:
    """The bounded fields a variant's config class declares beyond TrainConfig's (else lambda_wass)."""
    cls = VARIANTS[name].Config
    own = [f for f in field_names(cls) if f not in field_names(TrainConfig) and bounds_of(cls, f)]
    return own or ["lambda_wass"]


def test_every_declared_bound_is_checked():
    for name, variant in VARIANTS.items():
        for field in field_names(variant.Config):
            bounds = bounds_of(variant.Config, field)
            if not bounds:
                continue
            value, words = _breaking(bounds)
            with pytest.raises(ConfigError) as e:
                make_config(name, {field: value})
            assert str(e.value).startswith(f"{field} {words}"), (name, field, str(e.value))


def test_variant_names_are_derived_not_copied():
    for name, variant in VARIANTS.items():
        assert variant.name == name == variant.Config.variant_name == make_config(name, {}).variant

    class Toy(Variant):  # no settings of its own: it still gets a config class named after it
        name = "toy_names"

        def loss_terms(self, state):
            return {}

    try:
        assert Toy.Config is not TrainConfig and Toy.Config.variant_name == "toy_names"
        assert TrainConfig.variant_name == "" and make_config("toy_names", {}).variant == "toy_names"
    finally:
        REGISTRY.pop("toy_names")


def test_defaults_match_domain():
    adv = make_config("adversarial", {})
    assert (adv.k_d, adv.lr_d, adv.alpha, adv.lambda_fair, adv.fair_f_scale, adv.fair_m_scale) == (4, 1e-4, 0.2, 2.0, 1.0, 0.5)
    assert (adv.optimizer, adv.lr_g, adv.grad_clip, adv.batch_size, adv.seed, adv.lambda_wass) == ("adam", 1e-4, 0.1, 4, 42, 0.2)
    nce = make_config("infonce", {})
    assert (nce.temperature, nce.asymmetric_f, nce.asymmetric_m, nce.lambda_infonce) == (0.07, 1.5, 0.5, 1.0)
    assert (nce.optimizer, nce.weight_decay, nce.aug_strength, nce.proj_dim) == ("adamw", 0.01, "medium", 128)
    assert adv.aux_loss is True and nce.aux_loss is True  # the original's criterion: every decoder layer


def test_weights_live_in_one_place():
    from faap.variants.infonce import InfoNCE

    v = InfoNCE(make_config("infonce", {"lambda_wass": 0.3}), 16)
    assert v.weight_dict(0) == {"det": 0.5, "wass": 0.3, "infonce": 1.0}
    assert v.weight_dict(23)["det"] == pytest.approx(0.6)


@pytest.mark.parametrize("values,message", [
    ({"temprature": 0.1}, "unknown config key 'temprature' for variant 'infonce' (did you mean 'temperature'?)"),
    ({"k_d": 2}, "unknown config key 'k_d' for variant 'infonce' (it belongs to variant 'adversarial')"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"temperature": "hot"}, "temperature must be float"),
    ({"epochs": 2.5}, "epochs must be int"),
    ({"aux_loss": "yes"}, "aux_loss must be bool"),
    ({"eps_peak": -0.1}, "eps_peak must be > 0"),
    ({"lambda_wass": -1}, "lambda_wass must be >= 0"),
    ({"asymmetric_f": -1.0}, "asymmetric_f must be >= 0"),
    ({"aug_strength": "medum"}, "aug_strength must be one of none, weak, medium, strong (got 'medum') (did you mean 'medium'?)"),
])
def test_bad_values(values, message):
    with pytest.raises(ConfigError) as e:
        make_config("infonce", values)
    assert str(e.value).startswith(message), str(e.value)


def test_unknown_variant_and_set_parsing():
    with pytest.raises(ConfigError, match="unknown variant 'infonse'.*did you mean 'infonce'"):
        make_config("infonse", {})
    assert parse_set(["temperature=0.1", "train_scales=[128, 160]", "aug_strength=weak"]) == {
        "temperature": 0.1, "train_scales": [128, 160], "aug_strength": "weak"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["temperature"])


def _faap(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "faap.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.parametrize("extra,message", [
    (["--variant", "infonce", "--set", "temprature=0.1"], "did you mean 'temperature'"),
    (["--variant", "nope"], "unknown variant 'nope'"),
    (["--variant", "infonce", "--set", "temperature=-1"], "temperature must be > 0"),
    (["--variant", "infonce", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["--variant", "infonce", "--detector", "/no/such/detector.pth"], "detector checkpoint not found"),
])
def test_cli_bad_input_exit_2_nothing_written(tiny_data, tmp_path, extra, message):
    out = tmp_path / "run"
    r = _faap("train", "--data", tiny_data, "--out", str(out), *extra)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("faap: error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cli_bound_violation_one_line_exit_2(tiny_data, tmp_path, variant):
    field = _own_bounded(variant)[0]
    value, words = _breaking(bounds_of(VARIANTS[variant].Config, field))
    out = tmp_path / "run"
    r = _faap("train", "--variant", variant, "--data", tiny_data, "--out", str(out), "--set", f"{field}={value}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and f"{field} {words}" in r.stderr, r.stderr
    assert not out.exists()


def test_cli_missing_data_exit_2(tmp_path):
    r = _faap("train", "--variant", "adversarial", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "dataset folder not found" in r.stderr
    assert not (tmp_path / "run").exists()
    r = _faap("data", "inspect", str(tmp_path / "nope"))
    assert r.returncode == 2 and "problem" in r.stderr
