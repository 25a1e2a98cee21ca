"""The training sampler as a config choice: 'balanced' (unchanged), 'natural', 'fresh_subset'."""

import pytest
import torch

from conftest import tiny_values
from faap.data.loader import SAMPLERS, BalancedGroupSampler, FreshSubsetSampler, NaturalSampler
from faap.errors import ConfigError
from faap.variants import make_config

INDEX = {"female": list(range(0, 10)), "male": list(range(10, 50))}


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def _balanced_before_modes(group_index, seed, cap, epoch):
    """The balanced sampler as it was before the modes existed (a transcription): its draws must not move."""
    g = torch.Generator().manual_seed(seed)
    pools = []
    for name in ("female", "male"):
        pool = torch.tensor(group_index[name])
        if cap and cap < len(pool):
            pool = pool[torch.randperm(len(pool), generator=g)[:cap]]
        pools.append(pool)
    total = 2 * max(len(p) for p in pools)
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    which = torch.randint(0, 2, (total,), generator=g)
    out = torch.empty(total, dtype=torch.long)
    for k, pool in enumerate(pools):
        sel = which == k
        out[sel] = pool[torch.randint(0, len(pool), (int(sel.sum()),), generator=g)]
    return out.tolist()


def test_the_default_is_the_balanced_sampler_unchanged():
    assert make_config("infonce", {}).sampler == "balanced" and SAMPLERS["balanced"] is BalancedGroupSampler
    for cap in (0, 5):
        s = BalancedGroupSampler(INDEX, seed=3, cap=cap)
        assert [_epoch(s, e) for e in (0, 1)] == [_balanced_before_modes(INDEX, 3, cap, e) for e in (0, 1)]


def test_natural_keeps_the_group_ratio_and_draws_each_image_once():
    s = NaturalSampler(INDEX, seed=1)
    first, second = _epoch(s, 0), _epoch(s, 1)
    assert sorted(first) == sorted(second) == list(range(50))  # every image once: 10 women, 40 men
    assert first != second and first == _epoch(s, 0)  # shuffled afresh each epoch, reproducibly
    assert first != sorted(first)
    capped = NaturalSampler(INDEX, seed=1, cap=5)  # a fixed subset of each group, as the balanced cap
    draws = [set(_epoch(capped, e)) for e in range(3)]
    assert draws[0] == draws[1] == draws[2] and len(draws[0]) == 10
    longer = _epoch(NaturalSampler(INDEX, seed=1, samples_per_epoch=70), 0)
    assert len(longer) == 70 and sorted(longer[:50]) == list(range(50)) and len(set(longer[50:])) == 20


def test_fresh_subset_draws_a_new_subset_per_group_each_epoch():
    s = FreshSubsetSampler(INDEX, seed=1, cap=8)
    epochs = [_epoch(s, e) for e in range(4)]
    for draw in epochs:
        assert len(draw) == len(set(draw)) == 16  # without replacement
        assert sum(i < 10 for i in draw) == 8 and sum(i >= 10 for i in draw) == 8
    men = [{i for i in d if i >= 10} for d in epochs]
    assert len(set.union(*men)) > 8  # not one fixed subset
    assert epochs[0] == _epoch(s, 0)
    small = FreshSubsetSampler(INDEX, seed=1, cap=20)  # a group smaller than the cap gives all it has
    assert sum(i < 10 for i in _epoch(small, 0)) == 10 and len(small) == 30


@pytest.mark.parametrize("mode", sorted(SAMPLERS))
def test_ranks_share_one_draw(mode):
    whole = _epoch(SAMPLERS[mode](INDEX, seed=2, cap=8), 1)
    ranks = [_epoch(SAMPLERS[mode](INDEX, seed=2, cap=8, rank=r, world_size=3), 1) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    assert sorted(ranks[0] + ranks[1] + ranks[2]) == sorted(whole + whole[:len(ranks[0]) * 3 - len(whole)])


def test_the_config_chooses_the_trainers_sampler(tiny_data):
    from faap.trainer import Run

    run = Run(make_config("infonce", tiny_values(tiny_data, sampler="natural", epoch_samples=0)), "unused",
              progress=False)
    index = run.loader.dataset.group_index
    assert isinstance(run.sampler, NaturalSampler)
    assert sorted(_epoch(run.sampler, 0)) == sorted(index["female"] + index["male"])
    with pytest.raises(ConfigError, match="fresh_subset.*max_train_per_gender"):
        make_config("infonce", {"sampler": "fresh_subset"})
    with pytest.raises(ConfigError, match="sampler must be one of"):
        make_config("infonce", {"sampler": "natrual"})


def test_the_config_offers_exactly_the_registered_samplers():
    """faap.config cannot import the loader (faap.data imports faap.config): the choices are written in the
    config, and this keeps them in step with the samplers that exist."""
    from faap.config import TrainConfig, bounds_of

    assert set(bounds_of(TrainConfig, "sampler")["choices"]) == set(SAMPLERS)
