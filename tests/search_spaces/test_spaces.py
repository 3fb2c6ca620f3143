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
    (("  loss.lambda_kl: {type: float, low: 1.0e-6", "  loss.lambda_kl: {type: float, low: 1.0e-1"), 9,
     "low 0.1 > high 0.01"),
    (("  loss.lambda_kl:", "  loss.lamda_kl:"), 9, "unknown configuration field 'loss.lamda_kl' (did you mean "
                                                    "'loss.lambda_kl'?)"),
    (("param: hierarchy.depth", "param: model.depthh"), 10, "condition on 'model.depthh'"),
    (("base: lvae", "base: lvae\nbogus: 1"), 2, "bogus: Extra inputs are not permitted"),
    (("choices: [64, 128]", "choices: []"), 10, "non-empty 'choices'"),
    (("top: {low: 2, high: 8}", "top: {low: 9, high: 8}"), 6, "low 9.0 > high 8.0"),
    # a misspelt key is named (with its close match), not the 'Field required' it causes
    (("objectives:", "objectivs:"), 2, "objectivs: Extra inputs are not permitted (unknown key 'objectivs'; "
                                       "did you mean 'objectives'?)"),
    (("depth: {low: 1, high: 4}", "depth: {low: 1, hgih: 4}"), 5,
     "hierarchy.depth.hgih: Extra inputs are not permitted (unknown key 'hgih'; did you mean 'high'?)"),
    (("low: 1.0e-6, high: 1.0e-2, log: true", "low: 1.0e-6, high: 1.0e-2, lgo: true"), 9, "unknown key 'lgo'"),
    (("depth: {low: 1, high: 4}", "depth: {low: 0, high: 4}"), 5, "hierarchy.depth.low: Input should be greater"),
    # ranges that validate as numbers but cannot be sampled or trained
    (("low: 1.0e-6, high: 1.0e-2, log: true", "low: -1.0e-5, high: 1.0e-3, log: true"), 9,
     "params.loss.lambda_kl: Value error, a log-scale range needs low > 0, got -1e-05"),
    (("low: 1.0e-6, high: 1.0e-2, log: true", "low: 0.0, high: 1.0e-3, log: true"), 9,
     "a log-scale range needs low > 0"),
    (("low: 1.0e-6, high: 1.0e-2, log: true", "low: -1.0e-5, high: 1.0e-3"), 9,
     "params.loss.lambda_kl: low -1e-05 is not a valid loss.lambda_kl: Input should be greater than or equal to 0"),
    (("low: 1.0e-6, high: 1.0e-2, log: true", "low: 1.0e-6, high: .inf, log: true"), 9,
     "params.loss.lambda_kl.high: Input should be a finite number"),
    (("low: 1.0e-6, high: 1.0e-2, log: true", "low: .nan, high: 1.0e-2"), 9, "Input should be a finite number"),
    (("level: {low: 8, high: 64, log: true}", "level: {low: 8, high: 64, step: 0.5}"), 7,
     "latent sizes need an integer step"),
    (("choices: [64, 128]", "choices: [64, 4]"), 10, "params.model.ladder_hidden: choice 4 is not a valid "
                                                     "model.ladder_hidden: Input should be greater than or equal to 8"),
    (("params:", "params:\n  optim.lr: {type: float, low: 0.0, high: 1.0e-2}"), 9,
     "params.optim.lr: low 0.0 is not a valid optim.lr: Input should be greater than 0"),
    (("params:", "params:\n  model.grid: {type: categorical, choices: [16, 24]}"), 9,
     "params.model.grid: choice 24 is not a valid model.grid: Value error, grid must be a power of two"),
    (("params:", "params:\n  optim.epochs: {type: int, low: 2, high: 9, step: 0.5}"), 9,
     "an int parameter needs an integer step, got 0.5"),
    (("params:", "params:\n  model.grid: {type: categorical, choices: [16, 1024]}"), 9,
     "params.model.grid: choice 1024: model.grid: 1024^3 needs at least"),
    # fixed values are checked against the base config, at their line
    (("base: lvae", "base: lvae\nfixed:\n  optim.lr: .inf"), 3, "fixed: optim.lr: Input should be a finite number"),
    (("base: lvae", "base: lvae\nfixed:\n  optim.betas: [0.9, 2]"), 3,
     "fixed: optim.betas.1: Input should be less than 1"),
    (("base: lvae", "base: lvae\nfixed:\n  model.grid: 1024"), 3, "model.grid: 1024^3 needs at least"),
    # an objective no trial reports, with the metrics they do
    (("metric: val_dice", "metric: val_dcie"), 3, "objectives.0.metric: 'val_dcie' is not a metric every trial of this "
                                                 "space reports (did you mean 'val_dice'?); it reports: "),
    (("metric: val_dice", "metric: val_dice_3v"), 3, "val_acc, val_auc, val_dice, val_dice_ed, val_dice_es"),
    (("metric: val_dice", "metric: train_kl_1"), 3, "'train_kl_1' is not a metric every trial"),  # depth 1 has one KL
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


def test_objective_is_checked_against_the_task_of_the_base():
    fetal = GOOD.replace("base: lvae", "base: hcvae").replace("model.ladder_hidden", "loss.prior_recon") \
        .replace("choices: [64, 128]", "choices: [0.5, 1.0]")
    assert parse_space(fetal, "f.yaml").objectives[0].metric == "val_dice"
    parse_space(fetal.replace("metric: val_dice", "metric: val_dice_1v"), "f.yaml")
    with pytest.raises(SpaceError, match=r"f.yaml:3: .*'val_acc' is not a metric .*val_dice_1v"):
        parse_space(fetal.replace("metric: val_dice", "metric: val_acc"), "f.yaml")
    deep = GOOD.replace("depth: {low: 1, high: 4}", "depth: {low: 3, high: 4}").replace("val_dice", "train_kl_2")
    assert parse_space(deep, "d.yaml").objectives[0].metric == "train_kl_2"  # every depth has a third level


def test_check_space_sees_changed_fixed_values():
    from shapetune.search_spaces.spec import check_space

    space = parse_space(GOOD, "good.yaml")
    check_space(space)
    with pytest.raises(SpaceError, match=r"good.yaml: fixed: optim.lr: Input should be a finite number"):
        check_space(space.model_copy(update={"fixed": {"optim.lr": float("inf")}}))
