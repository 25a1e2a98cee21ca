import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("FAAP_THREADS", "1")  # commands run in-process (cli.main) keep this process at 1 thread
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: hub ids must fail fast


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The clean-baseline cache lives in a per-session temp folder, never in ~/.cache. Session-scoped and
    autouse, so it is set before any module- or session-scoped fixture computes a baseline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAAP_CACHE", str(tmp_path_factory.getbasetemp() / "faap-cache"))
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic benchmark in the original layout (seed 0, the demo detector's data)."""
    from faap.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(str(root), SynthConfig(n_train=48, n_val=12, n_test=12), workers=1, progress=False)
    return str(root)


def tiny_values(data, **over):
    """Config values for a fast run on ``tiny_data`` with the demo detector."""
    values = {"data": data, "detector": "demo", "epochs": 2, "epoch_samples": 8, "batch_size": 4,
              "train_scales": [128], "max_size": 128, "eval_size": 128, "random_crop": False, "device": "cpu"}
    values.update(over)
    return values
