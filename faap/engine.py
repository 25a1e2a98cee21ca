"""One training step and one training epoch, the same for every variant."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from faap import FEMALE
from faap.generator import BatchNormUpdates, perturb
from faap.losses import image_level_scores, one_way_wasserstein
from faap.detector import DetectorOutput
from faap.schedules import epsilon_at
from faap.variants.base import StepState


def female_first(batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, list, int]:
    """Reorder a batch so female rows come first; return (x, mask, targets, n_female)."""
    order = torch.argsort((batch["groups"] != FEMALE).to(torch.int8), stable=True)
    n_female = int((batch["groups"] == FEMALE).sum())
    x = batch["pixel_values"][order].to(device, non_blocking=True)
    mask = batch["pixel_mask"][order].to(device, non_blocking=True)
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch["targets"][i].items()}
               for i in order.tolist()]
    return x, mask, targets, n_female


def group_slices(n_female: int, n: int) -> tuple[slice, slice]:
    """Rows of the female and the male sub-batch of a female-first batch of ``n``."""
    return slice(0, n_female), slice(n_female, n)


def perturb_groups(generator, x, mask, n_female: int, eps: float, perturb_padding: bool = True):
    """G runs separately on the female and then the male sub-batch (per-group BatchNorm statistics,
    updated in that order, as the original)."""
    parts = [perturb(generator, x[s], mask[s], eps, perturb_padding)
             for s in group_slices(n_female, len(x)) if s.stop > s.start]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _image_means(scores: torch.Tensor, indices) -> torch.Tensor:
    """Each image's mean matched score (0 for an image without a match) from the per-query scores."""
    parts = scores.split([len(q) for q, _ in indices])
    return torch.stack([p.mean() if len(p) else scores.new_zeros(()) for p in parts])


def group_set_losses(detector, out, targets, n_female: int, whole_batch: bool = False, per_image: bool = False):
    """Set losses (``[whole batch]``, or ``[female, male]`` each normalised by its own boxes, 0 for a group
    absent from the batch), then the female and the male matched scores.

    ``whole_batch``: one set loss over the batch, normalised by all its boxes (the single-pass originals);
    ``per_image``: one score per image, its mean matched score (0 without a match), not one per query.
    """
    parts = [slice(0, len(targets))] if whole_batch else group_slices(n_female, len(targets))
    losses, matched, cut = [], [], n_female
    for s in parts:
        if s.stop == s.start:
            losses.append(out.logits.new_zeros(()))
            matched.append(out.logits.new_zeros(0))
            continue
        sub, tg = out.select(s), targets[s]
        loss, _, indices = detector.set_loss(sub, tg)
        losses.append(loss)
        scores = detector.matched_scores(sub, tg, indices)
        matched.append(_image_means(scores, indices) if per_image else scores)
        if whole_batch and not per_image:  # the female images' queries come first
            cut = sum(len(q) for q, _ in indices[:n_female])
    if whole_batch:
        return losses, matched[0][:cut], matched[0][cut:]
    return losses, matched[0], matched[1]


def group_set_loss(detector, out, targets, n_female: int, whole_batch: bool = False, per_image: bool = False):
    """Set loss summed over the groups (see :func:`group_set_losses`), matchings, matched scores."""
    losses, scores_f, scores_m = group_set_losses(detector, out, targets, n_female, whole_batch, per_image)
    return sum(losses), scores_f, scores_m


def detection_terms(detector, out, targets, n_female: int, variant) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The detection terms of G's loss: ``det`` (summed over the groups, or one over the whole batch with
    ``variant.whole_batch``), or ``det_f`` and ``det_m`` weighted apart (``variant.group_det_terms``, each
    group's set loss normalised by its own boxes even when G ran once over the whole batch)."""
    split = variant.group_det_terms
    losses, scores_f, scores_m = group_set_losses(detector, out, targets, n_female, variant.whole_batch and not split,
                                                  variant.image_scores)
    return ({"det_f": losses[0], "det_m": losses[1]} if split else {"det": sum(losses)}), scores_f, scores_m


def clean_outputs(detector, variant, x, mask) -> DetectorOutput | None:
    """The detector on the unperturbed batch, without a graph, for a variant that asks
    (``variant.needs_clean_outputs``); None otherwise (no extra forward)."""
    if not variant.needs_clean_outputs:
        return None
    with torch.no_grad(), autocast(variant.cfg, x):
        return detector(x, mask)


def _score_diagnostics(detector, out, n_female: int, top_k: int) -> dict[str, float]:
    """Each group's mean image-level score (mean of an image's ``top_k`` highest query scores) and their gap,
    male minus female (the originals' training ``score_gap``, on which fix10/fix11 picked their epoch)."""
    scores = image_level_scores(detector.class_probs(out.logits.float()), top_k)
    f, m = scores[:n_female], scores[n_female:]
    diag = {f"train_score_{tag}": float(s.mean()) for tag, s in (("f", f), ("m", m)) if len(s)}
    if len(f) and len(m):  # a one-group batch has no gap (its epoch mean is over the steps with both)
        diag["train_score_gap"] = diag["train_score_m"] - diag["train_score_f"]
    return diag


def _diagnostics(detector, out, delta, mask, n_female, scores_f, scores_m, thresh) -> dict[str, float]:
    with torch.no_grad():
        d = delta.flatten(1)
        obj = detector.objectness(out)
        linf, l2 = d.abs().max(1).values, d.norm(dim=1)
        diag = {"delta_linf": linf.mean().item(), "delta_l2": l2.mean().item()}
        for tag, s in zip("fm", group_slices(n_female, len(obj))):
            if len(obj[s]):  # a group absent from the batch adds nothing to its epoch mean
                diag[f"delta_linf_{tag}"] = linf[s].mean().item()
                diag[f"delta_l2_{tag}"] = l2[s].mean().item()
                diag[f"obj_score_{tag}"] = obj[s].mean().item()
                diag[f"obj_frac_{tag}"] = (obj[s] > thresh).float().mean().item()
        if len(scores_f):
            diag["matched_score_f"] = scores_f.mean().item()
        if len(scores_m):
            diag["matched_score_m"] = scores_m.mean().item()
    return diag


def current_eps(cfg, epoch: int) -> float:
    return epsilon_at(epoch, cfg.eps_start, cfg.eps_peak, cfg.eps_final, cfg.eps_warmup_epochs,
                      cfg.eps_hold_epochs, cfg.eps_cooldown_epochs)


def autocast(cfg, x: torch.Tensor):
    """bf16 autocast when the config asks for it (``amp: bf16``) and the batch is on CUDA; a no-op otherwise."""
    return torch.autocast("cuda", torch.bfloat16, enabled=cfg.amp == "bf16" and x.is_cuda)


def forward(generator, detector, variant, x, mask, n_female: int, eps: float, per_group: bool = False):
    """Perturb each group (or the whole batch, ``variant.whole_batch``), augment (variant), run
    the detector once over the whole batch.

    ``per_group`` runs the detector once per group instead (the original's structure; bench only).
    """
    with autocast(variant.cfg, x):
        if variant.whole_batch:  # one G pass: BatchNorm statistics over both groups
            x_adv, delta = perturb(generator, x, mask, eps, variant.cfg.perturb_padding)
        else:
            x_adv, delta = perturb_groups(generator, x, mask, n_female, eps, variant.cfg.perturb_padding)
        x_in = variant.augment(x_adv)
        if per_group:
            out = DetectorOutput.cat([detector(x_in[s], mask[s]) for s in group_slices(n_female, len(x))
                                      if s.stop > s.start])
        else:
            out = detector(x_in, mask)
    return out, delta


def generator_update(state: StepState, targets, delta, mask, detector, variant, opt_g, dist_sync=None) -> dict:
    """G's loss (weighted named terms), backward, clip, step; returns logged values."""
    cfg, out, n_female = variant.cfg, state.out, state.n_female
    det, scores_f, scores_m = detection_terms(detector, out, targets, n_female, variant)
    if variant.image_scores:
        state.extras["image_scores"] = torch.cat([scores_f, scores_m])
    state.extras["matched_scores"] = (scores_f, scores_m)  # with their graph (DINO-style score losses)
    terms = {**det, "wass": one_way_wasserstein(scores_f, scores_m), **variant.loss_terms(state)}
    weights = variant.weight_dict(state.epoch)
    total = sum(weights[k] * v for k, v in terms.items())
    logs = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
    logs["loss_total"] = float(total.detach())
    logs["lr_g"] = opt_g.param_groups[0]["lr"]  # the step's learning rate (a schedule may move it)
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite generator loss at epoch {state.epoch}: {logs}")
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    params = [p for group in opt_g.param_groups for p in group["params"]]
    if dist_sync is not None:
        dist_sync(params)
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt_g.step()
    variant.after_generator_step()
    logs.update(_diagnostics(detector, out, delta, mask, n_female, scores_f, scores_m, cfg.obj_conf_thresh))
    with torch.no_grad():
        logs.update(_score_diagnostics(detector, out, n_female, cfg.score_top_k))
    logs.update(state.extras.get("logs", {}))  # values the variant's loss_terms left for the log
    return logs


def _join_without_data(opt_g, dist_sync, grad_clip: float, variant) -> None:
    """A rank that skips its batch still joins the gradient average with zeros (the other ranks
    step; every rank must take the same step to stay in sync)."""
    params = [p for group in opt_g.param_groups for p in group["params"]]
    opt_g.zero_grad(set_to_none=False)
    dist_sync(params)
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt_g.step()
    variant.after_generator_step()


def train_step(batch, generator, detector, variant, opt_g, epoch: int, device, dist_sync=None) -> dict[str, float] | None:
    """One iteration: the variant's adversary steps on detached features, then one G step.

    The detector runs once: the adversary steps reuse the features of the same forward,
    which G's step then differentiates through. Returns None for a batch the variant skips
    (the original InfoNCE skipped batches without both groups: no step at all).
    """
    x, mask, targets, n_female = female_first(batch, device)
    if variant.skips(n_female, len(x)):
        if dist_sync is not None:
            _join_without_data(opt_g, dist_sync, variant.cfg.grad_clip, variant)
        return None
    passes = variant.extra_generator_passes()
    with BatchNormUpdates(generator, enabled=passes > 0) as bn:
        out, delta = forward(generator, detector, variant, x, mask, n_female, current_eps(variant.cfg, epoch))
    state = StepState(out=out, n_female=n_female, epoch=epoch, clean=clean_outputs(detector, variant, x, mask),
                      extras={"sync": dist_sync, "class_probs": detector.class_probs})
    logs = variant.before_generator_step(state)
    logs.update(generator_update(state, targets, delta, mask, detector, variant, opt_g, dist_sync))
    # The original ran G (train mode) once more per group for each adversary step: same batch
    # statistics each time, so only their running-statistic updates remain to be applied.
    bn.replay(passes)
    return logs


def train_one_epoch(loader, generator, detector, variant, opt_g, epoch: int, device, progress=True,
                    dist_sync=None, after_step=(), after_batch=()) -> dict[str, float]:
    """Mean of every logged value over the epoch's steps taken; ``skipped_steps`` counts the others.

    ``after_step`` callables run after every step of G's optimiser (e.g. an EMA update; a distributed
    rank that skips its batch still steps), ``after_batch`` ones after every batch, skipped or not (e.g.
    a per-step learning-rate schedule, which then ends on the epoch's last batch whatever was skipped).
    """
    from tqdm import tqdm

    sums, counts, skipped = defaultdict(float), defaultdict(int), 0
    generator.train()
    variant.train()
    bar = tqdm(loader, desc=f"epoch {epoch} train", disable=not progress, leave=False, mininterval=1.0)
    for batch in bar:
        logs = train_step(batch, generator, detector, variant, opt_g, epoch, device, dist_sync)
        for hook in (after_step if logs is not None or dist_sync is not None else ()):
            hook()
        for hook in after_batch:
            hook()
        if logs is None:
            skipped += 1
            continue
        for k, v in logs.items():
            sums[k] += v
            counts[k] += 1
        bar.set_postfix(loss=f"{sums['loss_total'] / counts['loss_total']:.3f}", refresh=False)
    out = {k: sums[k] / counts[k] for k in sums}
    out["skipped_steps"] = skipped
    if "matched_score_f" in out and "matched_score_m" in out:
        out["matched_score_gap"] = out["matched_score_m"] - out["matched_score_f"]
    return out
