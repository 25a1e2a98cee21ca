"""The plug points: one metric registry, one run-folder type, variants that declare their report."""

import os

import pytest

from faap.metrics import MAXIMIZE, METRICS, MINIMIZE, metric


def test_metric_registry_directions_and_selection():
    assert {m.direction for m in METRICS.values()} == {MINIMIZE, MAXIMIZE}
    assert all(m.name == name and m.description for name, m in METRICS.items())
    history = [{"epoch": 0, "AP_gap": 0.2, "AP_mean": 0.5}, {"epoch": 1, "AP_gap": 0.1, "AP_mean": 0.5},
               {"epoch": 2, "AP_gap": 0.1, "AP_mean": 0.4}]
    assert metric("AP_gap").best(history)["epoch"] == 1  # ties: the earliest
    assert metric("AP_mean").best(history)["epoch"] == 0
    with pytest.raises(Exception, match="unknown metric 'AP_gpa'.*did you mean 'AP_gap'"):
        metric("AP_gpa")


def test_spec_and_config_ask_the_registry():
    from ablations.spec import parse_spec
    from faap.config import TrainConfig, bounds_of

    assert tuple(bounds_of(TrainConfig, "select_metric")["choices"]) == tuple(METRICS)
    for name, m in METRICS.items():
        spec = parse_spec({"study": "s", "variant": "infonce", "n_trials": 1, "objectives": [{"metric": name}],
                           "search_space": {"temperature": {"type": "float", "low": 0.05, "high": 0.5}}})
        assert spec.directions == [m.direction]


def test_run_folder_layout_and_round_trip(tmp_path):
    from faap import checkpoint as ckpt
    from faap.rundir import RunDir

    run = RunDir.of_seed(str(tmp_path / "trial_0003"), 43)
    assert run.seed == 43 and run.path.endswith("trial_0003/seed43") and RunDir(str(tmp_path)).seed is None
    assert run.checkpoint_path(7).endswith("seed43/checkpoints/epoch_0007.pt") == ckpt.path_for(run.path, 7).endswith(
        "seed43/checkpoints/epoch_0007.pt") is True
    assert run.eval_path("test", 2).endswith("seed43/eval/test_epoch_0002.json")
    assert run.detections_path("val").endswith("seed43/eval/val_detections.json.gz")
    assert run.read_metrics() == [] and not run.finished() and run.selected_epoch() is None
    with pytest.raises(Exception, match="not a run folder"):
        run.read_config()
    run.write_config({"variant": "infonce", "seed": 43})
    assert run.read_config() == {"variant": "infonce", "seed": 43}
    for epoch in range(3):
        run.append_metrics({"epoch": epoch, "AP_gap": 0.1 * epoch})
    run.rewrite_metrics(run.read_metrics()[:2])
    assert [r["epoch"] for r in run.read_metrics()] == [0, 1]
    run.write_json(run.eval_path("val", 1), {"x": float("nan")})
    assert run.read_eval("val", 1) == {"x": None} and run.eval_files() == [run.eval_path("val", 1)]
    run.write_json(run.summary_path, {"selected_epoch": 1})
    assert run.finished() and run.selected_epoch() == 1
    for epoch in (2, 0):
        os.makedirs(os.path.dirname(run.checkpoint_path(epoch)), exist_ok=True)
        open(run.checkpoint_path(epoch), "wb").close()
    assert run.checkpoint_epochs() == [0, 2] == ckpt.list_epochs(run.path)


def test_data_root_reads_and_writes_nothing(tmp_path, monkeypatch):
    """What the study loader uses to find 'synthetic' (test_reports checks it never calls resolve_data)."""
    from ablations.storage import data_root

    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    assert data_root("synthetic").startswith(str(tmp_path / "runs")) and data_root("/x") == "/x"
    assert not (tmp_path / "runs").exists()


def test_a_variant_declares_its_trainer_plug_points_by_config_defaults():
    """Sampler, LR schedule and EMA are config fields: a variant's config class changes their defaults
    (its runs then use them, `--set` still overrides them) and their bounds still hold."""
    from dataclasses import dataclass

    from faap.config import TrainConfig
    from faap.errors import ConfigError
    from faap.schedules import lr_scheduler
    from faap.variants import make_config
    from faap.variants.base import REGISTRY, Variant

    @dataclass
    class ToyConfig(TrainConfig):
        lr_schedule: str = "warmup_cosine"
        lr_warmup_epochs: int = 3
        sampler: str = "natural"
        ema_decay: float = 0.999

    class Toy(Variant):
        name = "toy_plug_points"
        Config = ToyConfig

        def loss_terms(self, state):
            return {}

    try:
        cfg = make_config("toy_plug_points", {})
        assert (cfg.lr_schedule, cfg.sampler, cfg.ema_decay) == ("warmup_cosine", "natural", 0.999)
        assert make_config("toy_plug_points", {"lr_schedule": "constant"}).lr_schedule == "constant"
        with pytest.raises(ConfigError, match="lr_schedule must be one of"):
            make_config("toy_plug_points", {"lr_schedule": "cosin"})
        import torch

        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr_g)
        assert isinstance(lr_scheduler(opt, cfg, steps_per_epoch=10), torch.optim.lr_scheduler.LambdaLR)
        assert opt.param_groups[0]["lr"] == pytest.approx(cfg.lr_g / 3)  # warm-up epoch 0 of 3
        assert lr_scheduler(opt, make_config("infonce", {}), 10) is None  # 'constant': no scheduler at all
    finally:
        REGISTRY.pop("toy_plug_points")


def test_last_decoder_layer_only_is_a_variant_default_that_reaches_the_detector(tiny_data, tmp_path):
    """fix11_contrastive's detection terms took the last decoder layer only (its outputs dicts held no
    auxiliary outputs): its config's ``aux_loss: False`` builds the run's detector without them, and its
    set loss is then the last layer's alone; the other variants keep the original's auxiliary layers."""
    import dataclasses

    import torch

    from conftest import tiny_values
    from faap.bench import random_batch
    from faap.trainer import Run
    from faap.variants import make_config

    run = Run(make_config("fix11_contrastive", tiny_values(tiny_data)), str(tmp_path / "a"), progress=False)
    assert make_config("fix11_contrastive", {}).aux_loss is False and run.detector.aux_loss is False
    assert make_config("fix11_conditional", {}).aux_loss is True
    batch = random_batch(2, 64)
    targets = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in batch["targets"]]
    out = run.detector(batch["pixel_values"], batch["pixel_mask"])
    assert out.aux == []
    with_aux = Run(make_config("fix11_contrastive", tiny_values(tiny_data, aux_loss=True)), str(tmp_path / "b"),
                   progress=False).detector
    full = with_aux(batch["pixel_values"], batch["pixel_mask"])
    assert len(full.aux) > 0
    last_only = run.detector.set_loss(out, targets)[0]
    assert torch.allclose(last_only, with_aux.set_loss(dataclasses.replace(full, aux=[]), targets)[0])
    assert run.detector.aux_loss is False  # two runs, two detectors: no shared switch
    assert with_aux.set_loss(full, targets)[0] > last_only


def test_loader_workers_and_pinning_follow_the_device(monkeypatch):
    """'Run as they run': on CUDA the default (-1) feeds the GPU from the machine's cores and pins batches;
    on the CPU it starts no worker (they would compete with the compute threads); a set value wins."""
    import torch

    from faap.config import TrainConfig
    from faap.data import loader

    assert TrainConfig.__dataclass_fields__["num_workers"].default == -1 and TrainConfig.tf32 is True
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert loader.loader_workers(-1, "cuda") == 7 and loader.loader_workers(-1, "cpu") == 0
    assert loader.loader_workers(3, "cuda") == 3
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 64)
    assert loader.loader_workers(-1, "cuda:1") == loader.MAX_AUTO_WORKERS
    ds = list(range(4))
    assert loader.make_loader(ds, 2, device="cpu").pin_memory is False
    assert loader.make_loader(ds, 2, num_workers=0, device="cuda").pin_memory is True


def test_tf32_is_applied_on_cuda_only(monkeypatch):
    import torch

    from faap.runtime import apply_precision

    class Cfg:
        tf32 = False

    before, before_cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    apply_precision(Cfg, "cpu")
    assert torch.backends.cuda.matmul.allow_tf32 == before  # the CPU: untouched
    try:
        apply_precision(Cfg, "cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        Cfg.tf32 = True
        apply_precision(Cfg, "cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before, before_cudnn
