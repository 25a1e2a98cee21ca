"""Losses and schedules against values computed by hand (see each test's comment)."""

import math

import pytest
import torch

from faap.losses import adversarial_fairness, cross_gender_infonce, one_way_wasserstein, resample_sorted
from faap.schedules import beta_at, epsilon_at

Z_F = torch.tensor([[1.0, 0.0]])
Z_M = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def test_infonce_hand_computed():
    # tau = 1. F->M: anchor f1, positives sims [0, 1], no other female -> num == den -> 0.
    # M->F: m1: num = 0, den = log(e^0 [f1] + e^0 [m2]) = log 2 -> log 2.
    #       m2: num = 1, den = log(e^1 [f1] + e^0 [m1]) -> log(e + 1) - 1.
    l_mf = (math.log(2) + math.log(math.e + 1) - 1) / 2
    got = cross_gender_infonce(Z_F, Z_M, temperature=1.0, weight_f=1.5, weight_m=0.5)
    assert got.item() == pytest.approx(0.5 * l_mf, abs=1e-6)


def test_infonce_asymmetry_weights_the_directions():
    both = cross_gender_infonce(Z_F, Z_M, 1.0, 1.0, 1.0).item()
    only_f = cross_gender_infonce(Z_F, Z_M, 1.0, 1.0, 0.0).item()
    only_m = cross_gender_infonce(Z_F, Z_M, 1.0, 0.0, 1.0).item()
    assert only_f == pytest.approx(0.0, abs=1e-7)
    assert both == pytest.approx(only_f + only_m, abs=1e-7)
    # Swapping the groups swaps which weight applies.
    assert cross_gender_infonce(Z_M, Z_F, 1.0, 0.0, 1.0).item() == pytest.approx(only_f, abs=1e-7)


def test_infonce_masks_self_similarity_and_uses_temperature():
    # Two identical female anchors and one male: f1's denominator holds m1 and f2 but not f1 itself.
    z_f = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z_m = torch.tensor([[0.0, 1.0]])
    tau = 0.5
    # F->M per anchor: num = 0/tau = 0; den = log(e^0 + e^(1/tau)) -> loss log(1 + e^2).
    # M->F: m1 positives both f (sim 0) -> num = log 2; no other male -> den = log 2 -> 0.
    got = cross_gender_infonce(z_f, z_m, tau, 1.0, 1.0).item()
    assert got == pytest.approx(math.log(1 + math.e ** 2), abs=1e-6)


def test_infonce_needs_both_groups():
    empty = torch.zeros(0, 2, requires_grad=True)
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = cross_gender_infonce(empty, z)
    assert loss.item() == 0.0
    loss.backward()  # keeps a graph
    assert z.grad is not None and torch.all(z.grad == 0)


def test_resample_sorted_linear():
    assert resample_sorted(torch.tensor([0.2, 0.8]), 3).tolist() == pytest.approx([0.2, 0.5, 0.8])
    assert resample_sorted(torch.tensor([0.4]), 3).tolist() == pytest.approx([0.4, 0.4, 0.4])
    assert resample_sorted(torch.tensor([0.0, 1.0, 2.0, 3.0]), 3).tolist() == pytest.approx([0.0, 1.5, 3.0])


def test_one_way_wasserstein_hand_computed():
    # K = 3: female [0.2, 0.8] -> [0.2, 0.5, 0.8]; male sorted [0.5, 0.6, 0.9];
    # relu(m - f) = [0.3, 0.1, 0.1] -> mean 0.5 / 3.
    s_f = torch.tensor([0.8, 0.2], requires_grad=True)
    s_m = torch.tensor([0.9, 0.5, 0.6], requires_grad=True)
    loss = one_way_wasserstein(s_f, s_m)
    assert loss.item() == pytest.approx(0.5 / 3, abs=1e-6)
    loss.backward()
    assert s_m.grad is None  # male scores are detached
    assert torch.all(s_f.grad <= 0)  # only pushes female scores up


def test_one_way_wasserstein_is_one_way_and_handles_empty():
    assert one_way_wasserstein(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])).item() == 0.0
    assert one_way_wasserstein(torch.zeros(0), torch.tensor([0.5])).item() == 0.0
    assert one_way_wasserstein(torch.tensor([0.5]), torch.zeros(0)).item() == 0.0


def test_adversarial_fairness_hand_computed():
    # Uniform logits: CE = log 2, entropy = log 2 -> -(1 + alpha) log 2.
    got = adversarial_fairness(torch.zeros(3, 2), torch.tensor([1, 0, 1]), alpha=0.2)
    assert got.item() == pytest.approx(-1.2 * math.log(2), abs=1e-6)
    # Confident and right: CE ~ 0, entropy ~ 0.
    sure = adversarial_fairness(torch.tensor([[0.0, 30.0]]), torch.tensor([1]), alpha=0.2)
    assert sure.item() == pytest.approx(0.0, abs=1e-6)
    assert adversarial_fairness(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)).item() == 0.0


@pytest.mark.parametrize("epoch,expected", [
    (0, 0.05), (1, 0.05714285714285715), (7, 0.10), (8, 0.10), (13, 0.10), (14, 0.099), (18, 0.095), (23, 0.09),
    (30, 0.09),
])
def test_epsilon_schedule(epoch, expected):
    # epoch 1 value as logged by the original 3rd_fix6 run (legacy train_log.jsonl).
    assert epsilon_at(epoch) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("epoch,expected", [(0, 0.5), (1, 0.5043478260869565), (23, 0.6)])
def test_beta_schedule(epoch, expected):
    assert beta_at(epoch) == pytest.approx(expected, abs=1e-12)
