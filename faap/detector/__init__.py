"""``load_detector(spec, device)``: a frozen DETR-family detector from a spec string.

Its ``detector_id`` carries a digest of the weights it loaded, so cached clean baselines and
recorded runs tell two weight sets apart whatever path they came from.

``spec`` is ``demo`` (the bundled demo detector), a local transformers directory or hub
id (``facebook/detr-resnet-50``, ``microsoft/conditional-detr-resnet-50``), or a path to an
original facebookresearch DETR ``.pth`` checkpoint.
"""

from __future__ import annotations

import os
import re

import torch

from faap.detector.demo import DEMO_DIR
from faap.detector.wrapper import DetectorOutput, FrozenDetector, check_finite
from faap.errors import UserError

__all__ = ["load_detector", "FrozenDetector", "DetectorOutput", "DEMO_DIR"]


def _from_pretrained(path_or_id: str):
    from transformers import AutoModelForObjectDetection
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per model load clutters worker logs

    try:
        return AutoModelForObjectDetection.from_pretrained(path_or_id)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load detector '{path_or_id}': {first}") from None


def load_detector(spec: str, device: str | torch.device = "cpu", category_names: dict[int, str] | None = None,
                  aux_loss: bool = True):
    """A :class:`FrozenDetector` on ``device`` (``aux_loss``: its set loss sums every decoder layer)."""
    if spec == "demo":
        if not os.path.isfile(os.path.join(DEMO_DIR, "model.safetensors")):
            raise UserError(f"the bundled demo detector is missing from {DEMO_DIR} (run 'faap detector train-demo')")
        model = _from_pretrained(DEMO_DIR)
    elif spec.endswith((".pth", ".pt")):
        if not os.path.isfile(spec):
            raise UserError(f"detector checkpoint not found: {spec}")
        from faap.detector.official import load_official

        model = load_official(spec)
    elif os.path.isdir(os.path.expanduser(spec)):
        model = _from_pretrained(os.path.expanduser(spec))
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith("."):
        model = _from_pretrained(spec)  # a hub id; fails with one line where there is no network
    else:
        raise UserError(f"detector not found: {spec} (give 'demo', a model folder, a hub id or a DETR .pth file)")
    if not hasattr(model.config, "num_queries"):
        raise UserError(f"detector '{spec}' is a {model.config.model_type} model, not a DETR-family detector")
    detector = FrozenDetector(model, spec, category_names, aux_loss).to(device)
    check_finite(detector)  # before anything is written
    return detector
