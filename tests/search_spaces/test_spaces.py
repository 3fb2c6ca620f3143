"""Search spaces: shipped files load, the hierarchy is truly conditional, bad files name file and line."""

from __future__ import annotations

import optuna
import pytest

from shapetune.search_spaces import SpaceError, load_space, parse_space, shipped_spaces
from shapetune.search_spaces.sampling import define_by_run, trial_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = """\
base: lvae
objectives:
  - {metric: val_dice, mode: max}
hierarchy:
  depth: {low: 1, high: 4}
  top: {low: 2, high: 8}
  level: {low: 8, high: 64, log: true}
params:
  loss.lambda_kl: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  model.ladder_hidden: {type: categorical, choices: [64, 128], when: {param: hierarchy.depth, ge: 3}}
"""


def _sample(space, n, seed=0, sampler=None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=seed))
    fn = define_by_run(space)
    out = []
    for _ in range(n):
        t = study.ask()
        fn(t)
        out.append(t.params)
        study.tell(t, 0.0)
    return out


def test_shipped_spaces_load_and_give_valid_configs():
    assert {"vae_hcm", "lvae_hcm", "lvae_hcm_pareto"} <= set(shipped_spaces())
    for name in shipped_spaces():
        space = load_space(name)
        for params in _sample(space, 5):
            cfg = trial_config(space, params)
            assert cfg.model.name == name.split("_")[0]
    assert load_space("lvae_hcm_pareto").multi_objective


def test_depth_is_sampled_first_and_gives_exactly_one_size_per_level():
    space = parse_space(GOOD, "good.yaml")
    seen = set()
    for params in _sample(space, 40, seed=1):
        depth = params["hierarchy.depth"]
        seen.add(depth)
        levels = sorted(k for k in params if k.startswith("hierarchy.z_") and k != "hierarchy.z_top")
        assert levels == [f"hierarchy.z_{k}" for k in range(depth - 1)]  # nothing for absent levels
        assert 2 <= params["hierarchy.z_top"] <= 8
        assert ("model.ladder_hidden" in params) == (depth >= 3)  # a real condition, no dummy parameter
        cfg = trial_config(space, params)
        assert len(cfg.model.latent_dims) == depth and cfg.model.latent_dims[-1] == params["hierarchy.z_top"]
    assert seen == {1, 2, 3, 4}


def test_depth_two_gives_two_latent_sizes():
    space = parse_space(GOOD.replace("depth: {low: 1, high: 4}", "depth: {low: 2, high: 2}"), "d2.yaml")
    for params in _sample(space, 5):
        assert trial_config(space, params).model.latent_dims == [params["hierarchy.z_0"], params["hierarchy.z_top"]]


def test_tpe_sees_the_conditional_space():
    space = parse_space(GOOD, "good.yaml")
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=3, multivariate=True, group=True)
    for params in _sample(space, 10, sampler=sampler):
        assert len([k for k in params if k.startswith("hierarchy.z_")]) == params["hierarchy.depth"]


@pytest.mark.parametrize("edit, line, message", [
    (("  loss.lambda_kl: {type: float, low: 1.0e-6", "  loss.lambda_kl: {type: float, low: 1.0e-1"), 9, "low 0.1 > high 0.01"),
    (("  loss.lambda_kl:", "  loss.lamda_kl:"), 9, "unknown configuration field 'loss.lamda_kl'"),
    (("param: hierarchy.depth", "param: model.depthh"), 10, "condition on 'model.depthh'"),
    (("base: lvae", "base: lvae\nbogus: 1"), 2, "bogus: Extra inputs are not permitted"),
    (("choices: [64, 128]", "choices: []"), 10, "non-empty 'choices'"),
    (("top: {low: 2, high: 8}", "top: {low: 9, high: 8}"), 6, "low 9.0 > high 8.0"),
])
def test_bad_files_name_file_and_line(edit, line, message):
    text = GOOD.replace(*edit)
    with pytest.raises(SpaceError) as exc:
        parse_space(text, "bad.yaml")
    assert str(exc.value).startswith(f"bad.yaml:{line}:") and message in str(exc.value), str(exc.value)


def test_condition_must_refer_to_an_earlier_parameter():
    text = GOOD + "  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, when: {param: optim.batch_size, eq: 8}}\n" \
                  "  optim.batch_size: {type: categorical, choices: [4, 8]}\n"
    with pytest.raises(SpaceError, match=r"bad.yaml:11: .*optim.batch_size.*not a parameter sampled before"):
        parse_space(text, "bad.yaml")


def test_unknown_space_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SpaceError, match="lvae_hcm"):
        load_space("no_such_space")
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "missing.yaml")
