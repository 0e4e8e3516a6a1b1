"""The no-recourse control (`generator=none`) and per-repetition retraining skips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMOKE
from test_simulation import make_simulation

from recourse_sim.generators import GenericGenerator, NoRecourseGenerator
from recourse_sim.generators.base import SearchProblem
from recourse_sim.models.network import StackedNetworks

#: A run small enough for the CLI tests, with two repetitions and two models.
RUN = [*SMOKE, "simulation.n_repetitions=2", "simulation.n_rounds=4", "report=none"]
TABLES = ("metrics.csv", "recourse.csv", "final_population.csv", "decision_grid.csv")


def _cli(tmp_path, name, *overrides):
    from test_bad_inputs import compose_config

    from recourse_sim.__main__ import execute

    cfg = compose_config([*RUN, *overrides])
    assert execute(cfg, tmp_path / name) == 0
    return tmp_path / name


@pytest.mark.parametrize("processes", [1, 2])
def test_control_leaves_other_systems_byte_identical(tmp_path, processes):
    models = "model=[logistic,mlp]"
    alone = _cli(tmp_path, "alone", models, "generator=generic", f"processes={processes}")
    both = _cli(tmp_path, "both", models, "generator=[none,generic]", f"processes={processes}")
    for table in TABLES:
        before = pd.read_csv(alone / table, dtype=str)
        after = pd.read_csv(both / table, dtype=str)
        assert set(after.generator) == {"none", "generic"}
        generic = after[after.generator == "generic"].reset_index(drop=True)
        pd.testing.assert_frame_equal(before, generic)


def test_control_population_never_moves(tmp_path):
    run = _cli(tmp_path, "run", "model=[logistic,mlp]", "generator=[none,generic]")
    initial = pd.read_csv(run / "initial_population.csv")
    final = pd.read_csv(run / "final_population.csv")
    control = final[final.generator == "none"]
    assert len(control) == 2 * 2 * len(initial)  # 2 models x 2 repetitions
    for _, system in control.groupby(["model", "repetition"]):
        system = system.sort_values("individual")
        np.testing.assert_array_equal(system[["x1", "x2", "label"]], initial[["x1", "x2", "label"]])
        assert (system.n_recourse == 0).all()
    recourse = pd.read_csv(run / "recourse.csv")
    offered = recourse[recourse.generator == "none"]
    generic = recourse[recourse.generator == "generic"]
    # The control is offered the same individuals, but nothing is searched or implemented.
    assert offered.n_chosen.tolist() == generic.n_chosen.tolist()
    assert offered[["success_rate", "cost", "n_iterations"]].isna().all().all()
    # It is retrained like the others: its model moves although its data do not.
    metrics = pd.read_csv(run / "metrics.csv")
    last = metrics[(metrics.generator == "none") & (metrics["round"] == metrics["round"].max())]
    assert (last[last.metric == "perturbation"].value > 0).all()
    assert (last[last.metric == "mmd_domain"].value.abs() < 0.05).all()


def test_control_alone_still_chooses_people():
    sim = make_simulation(generators={"none": NoRecourseGenerator()}).run()
    for name, stack in sim.populations.items():
        initial = torch.tensor(np.array(sim.train.X), dtype=stack.dtype)
        assert torch.equal(stack, initial.expand_as(stack)), name


def test_control_search_returns_factuals():
    sim = make_simulation(generators={"generic": GenericGenerator(max_iter=5)})
    sim._pretrain()
    X = sim.populations["logistic"][:, :3]
    problem = SearchProblem(
        factuals=X,
        individual_ids=torch.arange(3).expand(2, 3),
        system_keys=torch.tensor([1, 2]),
        model=sim.classifiers["logistic"],
        space=sim.space,
        population_X=sim.populations["logistic"],
        population_y=sim.labels["logistic"],
        n_counterfactuals=4,
    )
    result = NoRecourseGenerator().search(problem)
    assert result.counterfactuals.shape == (2, 3, 4, 2)
    assert torch.equal(result.counterfactuals, X.unsqueeze(2).expand(2, 3, 4, 2).double())
    assert not result.converged.any() and (result.n_iterations == 0).all()


def _changed(sim, repetitions: list[int]) -> None:
    """Mark the rows of these repetitions' systems as changed since the last retraining."""
    for name, state in sim.state.items():
        flags = [s.repetition in repetitions for s in sim.systems[name]]
        state.changed_since_retraining = torch.tensor(flags)


def test_repetition_that_chose_nobody_is_not_retrained():
    """The reference skips a system's update in a round where it chose nobody (item 3)."""
    sim = make_simulation()
    sim._pretrain()
    before = {name: clf.nets.flat.clone() for name, clf in sim.classifiers.items()}
    _changed(sim, [1])  # repetition 0 chose nobody: none of its rows changed
    sim._retraining_phase(1)
    for name, clf in sim.classifiers.items():
        was = StackedNetworks(clf.nets.architecture, clf.nets.n_nets, before[name])
        for system in sim.systems[name]:  # one member per system for these models
            now_params = clf.nets.parameters_of(system.slot)
            was_params = was.parameters_of(system.slot)
            unchanged = all(torch.equal(a, b) for a, b in zip(now_params, was_params, strict=True))
            assert unchanged == (system.repetition == 0), (name, system)


def test_retraining_skip_leaves_active_repetitions_unchanged():
    """Restoring the idle repetition's weights does not touch what the others learnt."""
    skipped, full = make_simulation(), make_simulation()
    for sim in (skipped, full):
        sim._pretrain()
    _changed(skipped, [1])
    _changed(full, [0, 1])
    skipped._retraining_phase(1)
    full._retraining_phase(1)
    for name in skipped.classifiers:
        for system in skipped.systems[name]:
            if system.repetition == 1:
                a = skipped.classifiers[name].select([system.slot]).nets.flat
                b = full.classifiers[name].select([system.slot]).nets.flat
                assert torch.equal(a, b)


def test_control_comparison_by_hand():
    from recourse_sim.report.tables import control_comparison

    rows = []
    # Two repetitions; final round 2. generic: 0.5, 0.7; control: 0.1, 0.4 -> differences 0.4, 0.3.
    for rep, (gen, ctl) in enumerate([(0.5, 0.1), (0.7, 0.4)]):
        for generator, value in (("generic", gen), ("none", ctl)):
            rows.append((rep, 0, "logistic", generator, "mmd_domain", "domain", 0.0, None))
            rows.append((rep, 2, "logistic", generator, "mmd_domain", "domain", value, 0.01))
    columns = ["repetition", "round", "model", "generator", "metric", "scope", "value", "p_value"]
    table = control_comparison(pd.DataFrame(rows, columns=columns))
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.generator, row.n) == ("generic", 2)
    assert row["mean"] == pytest.approx(0.6) and row.control == pytest.approx(0.25)
    assert row.difference == pytest.approx(0.35)
    assert row.sd_difference == pytest.approx(np.std([0.4, 0.3], ddof=1))
    # Without a control there is nothing to compare.
    assert control_comparison(
        pd.DataFrame(rows, columns=columns).query("generator != 'none'")
    ).empty


@pytest.mark.parametrize("preset", ["paper_synthetic", "paper_real_world"])
def test_paper_presets_compose_without_user_files(preset):
    from test_bad_inputs import compose_config

    from recourse_sim.run import named_nodes

    cfg = compose_config([f"+experiment={preset}"])
    assert list(named_nodes(cfg, "generator")) == ["generic", "greedy", "revise", "dice"]
    assert len(named_nodes(cfg, "model")) == 3
    if preset == "paper_real_world":
        assert cfg.data._target_.endswith("load_credit") and cfg.data.n_samples == 5000
        assert cfg.metrics.mmd_model_grid.n_points == 10000
        assert (cfg.generator.revise.vae.latent_dim, cfg.generator.revise.vae.epochs) == (8, 250)


def test_wachter_names_its_two_replacements(tmp_path, capsys):
    from test_bad_inputs import status_of

    for choice in ("generator=wachter", "generator=[generic,wachter]"):
        status, err = status_of([*SMOKE, choice], tmp_path / "run", capsys)
        assert status == 2
        assert "generator=wachter_mad" in err and "generator=generic" in err, err
        assert "MAD" in err and "L2" in err and "Traceback" not in err
        assert not (tmp_path / "run" / "metrics.csv").exists()


def test_label_none_is_reserved_for_the_control(tmp_path, capsys):
    from test_bad_inputs import status_of

    overrides = [
        *SMOKE,
        "generator=generic",
        "+generator.none._target_=recourse_sim.generators.GenericGenerator",
    ]
    status, err = status_of(overrides, tmp_path / "run", capsys)
    assert status == 2 and "generator.none._target_" in err and "reserved" in err, err
