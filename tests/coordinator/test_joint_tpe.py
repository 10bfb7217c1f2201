"""coordinator.joint_tpe: the joint, pending-aware TPE on hyperopt spaces.

Each hyperopt distribution's mapping, conditional spaces, pending-awareness, resume, and
use as ``algo=`` in plain ``hyperopt.fmin`` with ``hyperopt.Trials`` and with MongoTrials.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from hyperopt import STATUS_OK, Trials, base, fmin, hp, rand, space_eval
from optuna.trial import TrialState
from pymongo.database import Database

from coordinator import joint_tpe
from coordinator.algorithms import ALGORITHMS, suggest_function
from jobstore import schema as s
from jobstore.queue import JobQueue
from jobstore.schema import State
from jobstore.trials import MongoTrials
from user_errors import UserError

STARTUP = 5


def _is_multiple(v: float, q: float) -> bool:
    return abs(v / q - round(v / q)) < 1e-9


def _quantized(low: float, high: float, q: float) -> Callable[[float], bool]:
    return lambda v: _is_multiple(v, q) and np.round(low / q) <= round(v / q) <= np.round(high / q)


# label -> (the hyperopt expression, is this stored value one hyperopt's distribution can produce?)
CASES: dict[str, tuple[Any, Callable[[Any], bool]]] = {
    "uniform": (hp.uniform("p", -2, 3), lambda v: -2 <= v <= 3),
    "quniform": (hp.quniform("p", -3, 7, 2), _quantized(-3, 7, 2)),
    "loguniform": (hp.loguniform("p", -2, 1), lambda v: math.exp(-2) <= v <= math.exp(1)),
    "qloguniform": (hp.qloguniform("p", math.log(8), math.log(100), 4),
                    _quantized(8, 100, 4)),
    "uniformint": (hp.uniformint("p", 1, 9), lambda v: v == int(v) and 1 <= v <= 9),
    "randint-upper": (hp.randint("p", 5), lambda v: isinstance(v, (int, np.integer)) and 0 <= v < 5),
    "randint-range": (hp.randint("p", 3, 9), lambda v: isinstance(v, (int, np.integer)) and 3 <= v < 9),
    "normal": (hp.normal("p", 1, 2), lambda v: math.isfinite(v)),
    "qnormal": (hp.qnormal("p", 0, 3, 0.5), lambda v: _is_multiple(v, 0.5)),
    "lognormal": (hp.lognormal("p", 0, 1), lambda v: v > 0),
    "qlognormal": (hp.qlognormal("p", 1, 0.5, 1), lambda v: v >= 0 and _is_multiple(v, 1)),
    "choice": (hp.choice("p", ["a", "b", "c", "d"]), lambda v: v in (0, 1, 2, 3)),
    "pchoice": (hp.pchoice("p", [(0.5, "a"), (0.0, "never"), (0.5, "c")]), lambda v: v in (0, 2)),
}


def _number(value: Any) -> float:
    return {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}.get(value, value) if isinstance(value, str) else float(value)


def _run(space: Any, evals: int, trials: Trials, seed: int = 0, loss: Callable[[Any], float] | None = None,
         algo: Callable[..., Any] | None = None) -> list[Any]:
    received: list[Any] = []

    def objective(params: Any) -> float:
        received.append(params)
        return loss(params) if loss else abs(_number(params) - 1.7)

    fmin(objective, space, algo=algo or partial(joint_tpe.suggest, n_startup_trials=STARTUP), max_evals=evals,
         trials=trials, rstate=np.random.default_rng(seed), show_progressbar=False)
    return received


def _point(doc: dict[str, Any]) -> dict[str, Any]:
    return {label: v[0] for label, v in doc["misc"]["vals"].items() if v}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_distribution_samples_inside_its_space_and_space_eval_is_what_the_objective_got(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    space, valid = CASES[case]
    startup_calls = []
    real_rand = joint_tpe.rand.suggest
    monkeypatch.setattr(joint_tpe.rand, "suggest", lambda *a: startup_calls.append(1) or real_rand(*a))
    trials = Trials()
    received = _run(space, 25, trials)
    assert len(startup_calls) == STARTUP  # the other 20 points came from the model
    kept = [t for t in joint_tpe._states[trials].study.trials if t.state != TrialState.FAIL]
    assert len(kept) == 25  # (draws rejected as duplicates are failed trials)
    for doc, got in zip(trials.trials, received, strict=True):
        value = doc["misc"]["vals"]["p"][0]
        assert doc["misc"]["idxs"]["p"] == [doc["tid"]]
        assert valid(value), f"{case}: {value!r} is not in the space"
        assert space_eval(space, _point(doc)) == got
        assert type(space_eval(space, _point(doc))) is type(got)
    if case == "pchoice":
        assert all(g != "never" for g in received)


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_values_map_to_hyperopt_values_and_back(case: str) -> None:
    plan = joint_tpe.check_space(CASES[case][0])
    param = plan.params["p"]
    rng = np.random.default_rng(1)
    model = param.model
    for _ in range(200):
        if hasattr(model, "choices"):
            x = model.choices[int(rng.integers(len(model.choices)))]
        elif model.log:
            x = math.exp(rng.uniform(math.log(model.low), math.log(model.high)))
            x = round(x) if isinstance(model.low, int) else x
        else:
            x = rng.uniform(model.low, model.high)
            x = int(round(x)) if isinstance(model.low, int) else x
        value = param.from_model(x)
        assert CASES[case][1](value)
        canonical = param.to_model(value)
        assert model._contains(model.to_internal_repr(canonical))
        again = param.to_model(param.from_model(canonical))
        if param.kind in ("normal", "lognormal"):  # continuous: equal up to float rounding
            assert again == pytest.approx(canonical, rel=1e-9, abs=1e-15)
        else:
            assert again == canonical


@pytest.mark.parametrize(("case", "bad"), [
    ("uniform", 3.5), ("quniform", 3.0), ("quniform", 10.0), ("loguniform", 0.0), ("qloguniform", 6.0),
    ("randint-upper", 5), ("randint-range", 2.5), ("choice", 4), ("pchoice", 1), ("lognormal", -1.0),
    ("normal", float("nan")), ("uniform", "3"),
])
def test_values_the_distribution_cannot_produce_are_rejected(case: str, bad: Any) -> None:
    param = joint_tpe.check_space(CASES[case][0]).params["p"]
    with pytest.raises(ValueError, match="p"):
        param.to_model(bad)


def test_spaces_that_cannot_be_mapped_are_refused_naming_the_parameter() -> None:
    with pytest.raises(joint_tpe.UnsupportedSpace, match="'small'.*yield 0"):
        joint_tpe.check_space({"small": hp.qloguniform("small", 0, 3, 4), "x": hp.uniform("x", 0, 1)})
    with pytest.raises(joint_tpe.UnsupportedSpace, match="'b'.*depend on other hyperparameters"):
        joint_tpe.check_space({"b": hp.uniform("b", 0, hp.uniform("a", 1, 2))})
    trials = Trials()
    with pytest.raises(joint_tpe.UnsupportedSpace, match="'small'"):
        _run({"small": hp.qloguniform("small", 0, 3, 4)}, 3, trials)
    assert len(trials) == 0  # refused before anything was sampled


NESTED = hp.choice("model", [
    {"kind": "linear", "lr": hp.loguniform("lr", -5, 0)},
    {"kind": "tree", "depth": hp.uniformint("depth", 1, 8),
     "split": hp.choice("split", [{"how": "gini"}, {"how": "entropy", "w": hp.uniform("w", 0, 1)}])},
])


def _nested_loss(p: dict[str, Any]) -> float:
    if p["kind"] == "linear":
        return 1 + abs(math.log(p["lr"]) + 2)
    return abs(p["depth"] - 5) / 4 + (0.3 if p["split"]["how"] == "gini" else abs(p["split"]["w"] - 0.8))


def test_conditional_spaces_set_exactly_the_active_parameters() -> None:
    trials = Trials()
    received = _run(NESTED, 40, trials, loss=_nested_loss)
    branches = set()
    for doc, got in zip(trials.trials, received, strict=True):
        vals, idxs = doc["misc"]["vals"], doc["misc"]["idxs"]
        assert set(vals) == {"model", "lr", "depth", "split", "w"}
        active = {label for label, v in vals.items() if v}
        assert all(idxs[label] == ([doc["tid"]] if label in active else []) for label in vals)
        if got["kind"] == "linear":
            expected = {"model", "lr"}
        else:
            expected = {"model", "depth", "split"} | ({"w"} if got["split"]["how"] == "entropy" else set())
        assert active == expected
        assert space_eval(NESTED, _point(doc)) == got
        branches.add(frozenset(active))
    assert len(branches) == 3
    tail = [_nested_loss(g) for g in received[-15:]]
    assert np.median(tail) < np.median([_nested_loss(g) for g in received[:STARTUP]])


def _domain(space: Any) -> base.Domain:
    return base.Domain(lambda p: 0.0, space)


def _add_rand_docs(trials: Trials, domain: base.Domain, n: int, seed: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        docs += rand.suggest(trials.new_trial_ids(1), domain, trials, seed + i)
    trials.insert_trial_docs(docs)
    trials.refresh()
    return [d for d in trials._dynamic_trials if d["tid"] in {doc["tid"] for doc in docs}]


def _finish(doc: dict[str, Any], loss: float | None) -> None:
    doc["state"] = base.JOB_STATE_DONE
    doc["result"] = {"status": STATUS_OK, "loss": loss} if loss is not None else {"status": "fail"}


def _by_tid(state: Any) -> dict[int, Any]:
    trials = {t._trial_id: t for t in state.storage.get_all_trials(state.study_id)}
    return {tid: trials[trial_id] for tid, trial_id in state.tracked.items() if trial_id >= 0}


def test_pending_trials_are_shown_as_running_and_told_once_they_finish() -> None:
    space = {"x": hp.uniform("x", -3, 3), "c": hp.choice("c", ["a", "b", "c"])}
    domain, trials = _domain(space), Trials()
    for doc in _add_rand_docs(trials, domain, 8, seed=10):
        _finish(doc, abs(doc["misc"]["vals"]["x"][0]))
    trials.refresh()
    pending = _add_rand_docs(trials, domain, 3, seed=50)  # state new: in the queue or being evaluated
    pending[1]["state"] = base.JOB_STATE_RUNNING
    trials.refresh()
    new = joint_tpe.suggest(trials.new_trial_ids(2), domain, trials, 7, n_startup_trials=STARTUP)
    assert len(new) == 2
    state = joint_tpe._states[trials]
    seen = _by_tid(state)
    for doc in pending:
        assert seen[doc["tid"]].state == TrialState.RUNNING
        assert seen[doc["tid"]].params == {"x": doc["misc"]["vals"]["x"][0], "c": doc["misc"]["vals"]["c"][0]}
    for doc in new:  # the second proposal saw the first as running
        assert seen[doc["tid"]].state == TrialState.RUNNING
        assert seen[doc["tid"]].params == _point(doc)
    assert sum(t.state == TrialState.RUNNING for t in seen.values()) == 5
    assert sum(t.state == TrialState.COMPLETE for t in seen.values()) == 8

    trials.insert_trial_docs(new[:1])  # the second proposal never reaches the store
    trials.refresh()
    _finish(pending[0], 0.25)
    _finish(pending[1], None)
    pending[2]["state"] = base.JOB_STATE_ERROR
    trials.refresh()
    joint_tpe.suggest(trials.new_trial_ids(1), domain, trials, 8, n_startup_trials=STARTUP)
    seen = _by_tid(state)
    assert seen[pending[0]["tid"]].state == TrialState.COMPLETE and seen[pending[0]["tid"]].value == 0.25
    assert seen[pending[1]["tid"]].state == TrialState.FAIL
    # an error job leaves hyperopt's trials, as does a proposal never inserted: gone, so failed
    assert seen.get(pending[2]["tid"]) is None and seen.get(new[1]["tid"]) is None
    failed = {tuple(sorted(t.params.items())) for t in state.storage.get_all_trials(state.study_id)
              if t.state == TrialState.FAIL}
    assert {tuple(sorted(_point(d).items())) for d in (pending[1], pending[2], new[1])} <= failed
    assert seen[new[0]["tid"]].state == TrialState.RUNNING
    n_trials = len(state.storage.get_all_trials(state.study_id))
    joint_tpe.suggest(trials.new_trial_ids(1), domain, trials, 9, n_startup_trials=STARTUP)
    assert len(state.storage.get_all_trials(state.study_id)) == n_trials + 1  # finished trials told once


def test_parallel_proposals_in_one_call_are_spread_out() -> None:
    space = {f"e{i}": hp.choice(f"e{i}", list(range(5))) for i in range(3)}
    domain, trials = _domain(space), Trials()
    for doc in _add_rand_docs(trials, domain, 20, seed=0):
        _finish(doc, float(sum(v[0] for v in doc["misc"]["vals"].values())))
    trials.refresh()
    distinct = []
    for seed in range(5):
        copy_ = Trials()
        copy_.insert_trial_docs(copy.deepcopy(trials.trials))
        copy_.refresh()
        docs = joint_tpe.suggest(copy_.new_trial_ids(8), domain, copy_, seed, n_startup_trials=STARTUP)
        distinct.append(len({tuple(sorted(_point(d).items())) for d in docs}))
    # 8 proposals at once, each seeing the earlier ones as running (constant liar, no repeats)
    assert np.mean(distinct) >= 6, distinct


def test_resume_rebuilds_the_same_model_state_from_the_trials() -> None:
    space = {"x": hp.qnormal("x", 0, 2, 0.5), "y": hp.normal("y", 1, 1), "n": hp.quniform("n", 0, 20, 5),
             "m": NESTED}
    live = Trials()
    _run(space, 25, live, loss=lambda p: abs(p["x"] - 1) + abs(p["y"]) + p["n"] / 20 + _nested_loss(p["m"]))
    resumed = Trials()
    resumed.insert_trial_docs(copy.deepcopy(live.trials))
    resumed.refresh()
    received = _run(space, 32, resumed, seed=3,
                    loss=lambda p: abs(p["x"] - 1) + abs(p["y"]) + p["n"] / 20 + _nested_loss(p["m"]))
    assert len(received) == 7 and len(resumed) == 32
    before, after = _by_tid(joint_tpe._states[live]), _by_tid(joint_tpe._states[resumed])
    for doc in live.trials:
        assert after[doc["tid"]].params == before[doc["tid"]].params
        assert after[doc["tid"]].value == doc["result"]["loss"]
        if doc["tid"] != live.trials[-1]["tid"]:  # the live state has not seen the last one finish
            assert before[doc["tid"]].value == doc["result"]["loss"]
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) == 31  # and the last one running


def test_trials_from_other_algorithms_are_used_and_malformed_documents_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    space = {"x": hp.uniform("x", -3, 3)}
    domain, trials = _domain(space), Trials()
    docs = _add_rand_docs(trials, domain, 9, seed=0)
    for doc in docs:
        _finish(doc, abs(doc["misc"]["vals"]["x"][0]))
    docs[0]["misc"]["vals"]["x"] = [99.0]
    docs[1]["misc"]["vals"] = {"x": [1.0], "unknown": [2]}
    docs[2]["misc"]["vals"]["x"] = "not a list"
    docs[3]["misc"] = None
    docs[4]["result"] = {"status": STATUS_OK, "loss": float("nan")}
    trials.refresh()
    with caplog.at_level(logging.WARNING, logger="coordinator.joint_tpe"):
        out = joint_tpe.suggest(trials.new_trial_ids(1), domain, trials, 1, n_startup_trials=4)
        joint_tpe.suggest(trials.new_trial_ids(1), domain, trials, 2, n_startup_trials=4)
    assert len(out) == 1 and -3 <= out[0]["misc"]["vals"]["x"][0] <= 3
    state = joint_tpe._states[trials]
    assert state.complete == 4  # 9 done, 4 malformed, 1 with a NaN loss
    assert state.sync([*trials.trials, {"tid": ["unhashable"]}, {"tid": "7"}, {}])  # documents without a tid
    assert state.complete == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4  # once per trial, not once per call
    assert any("outside [-3.0, 3.0]" in w for w in warnings)
    assert any("'unknown' is not a hyperparameter" in w for w in warnings)


def test_plain_fmin_with_hyperopt_trials_optimizes() -> None:
    trials = Trials()
    space = {"x": hp.uniform("x", -5, 5), "y": hp.uniform("y", -5, 5)}
    best = fmin(lambda p: (p["x"] - 1) ** 2 + (p["y"] + 2) ** 2, space, algo=joint_tpe.suggest, max_evals=60,
                trials=trials, rstate=np.random.default_rng(0), show_progressbar=False)
    assert abs(best["x"] - 1) < 1 and abs(best["y"] + 2) < 1
    assert min(trials.losses()) < 0.5


def test_plain_fmin_with_mongo_trials(db: Database) -> None:
    stop = threading.Event()
    seen: list[tuple[Any, Any]] = []
    errors: list[BaseException] = []

    def serve() -> None:
        queue = JobQueue(db)
        try:
            while not stop.is_set():
                claim = queue.claim("thread", exp_key="j")
                if claim is None:
                    time.sleep(0.005)
                    continue
                params = space_eval(NESTED, s.point_from_vals(claim.job[s.MISC]["vals"]))
                seen.append((params, claim.job[s.PARAMS]))
                queue.finish(claim, State.DONE, {"status": STATUS_OK, "loss": _nested_loss(params)})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    server = threading.Thread(target=serve)
    server.start()
    try:
        trials = MongoTrials(db, exp_key="j", experiment="nested")
        fmin(lambda p: 0, NESTED, algo=partial(joint_tpe.suggest, n_startup_trials=STARTUP), max_evals=20,
             trials=trials, max_queue_len=3, show_progressbar=False, rstate=np.random.default_rng(0))
    finally:
        stop.set()
        server.join()
    assert not errors
    assert trials.count_by_state_unsynced(State.DONE) == 20 and len(seen) == 20
    assert all(s.bson_safe(params) == stored for params, stored in seen)
    state = joint_tpe._states[trials]
    assert len(state.tracked) == 20  # every trial was seen (the last few still pending)
    resumed = MongoTrials(db, exp_key="j", experiment="nested")
    joint_tpe.suggest(resumed.new_trial_ids(1), _domain(NESTED), resumed, 0, n_startup_trials=STARTUP)
    assert joint_tpe._states[resumed].complete == 20  # a new process would see the same


def test_the_algorithm_is_chosen_by_name() -> None:
    assert "joint-tpe" in ALGORITHMS and "tpe" in ALGORITHMS
    assert suggest_function("joint-tpe") is joint_tpe.suggest
    from hyperopt import tpe

    assert suggest_function("tpe") is tpe.suggest
    with pytest.raises(UserError, match="joint-tpe"):
        suggest_function("optuna")


def _proposals(avoid: bool, seed: int) -> tuple[set[tuple], list[tuple]]:
    space = {f"e{i}": hp.choice(f"e{i}", list(range(4))) for i in range(2)}
    domain, trials = _domain(space), Trials()
    for doc in _add_rand_docs(trials, domain, 12, seed=100 * seed):
        _finish(doc, float(sum(v[0] for v in doc["misc"]["vals"].values())))
    trials.refresh()
    known = {tuple(sorted(_point(d).items())) for d in trials.trials}
    new = []
    for i in range(3):
        docs = joint_tpe.suggest(trials.new_trial_ids(1), domain, trials, seed * 10 + i,
                                 n_startup_trials=STARTUP, avoid_duplicates=avoid)
        trials.insert_trial_docs(docs)
        trials.refresh()
        new.append(tuple(sorted(_point(docs[0]).items())))
    return known, new


def test_points_already_evaluated_or_pending_are_not_proposed_again() -> None:
    repeats = {True: 0, False: 0}
    for avoid in (True, False):
        for seed in range(6):
            known, new = _proposals(avoid, seed)
            repeats[avoid] += sum(p in known for p in new) + len(new) - len(set(new))
    assert repeats[False] > 0  # the model alone does propose repeats here (16 points, 12 known)
    assert repeats[True] == 0


def test_deleted_trials_leave_the_model() -> None:
    space = {"x": hp.uniform("x", -3, 3)}
    trials = Trials()
    _run(space, 12, trials, loss=lambda p: abs(p["x"]))
    before = joint_tpe._states[trials]
    trials.delete_all()
    trials.refresh()
    _run(space, 8, trials, loss=lambda p: abs(p["x"]))
    after = joint_tpe._states[trials]
    assert after is not before
    kept = [t for t in after.storage.get_all_trials(after.study_id) if t.state != TrialState.FAIL]
    assert len(trials) == 8 and len(kept) == 8 and after.complete == 7  # the last one still pending to it


def test_group_decomposition_is_used_only_for_conditional_spaces() -> None:
    assert joint_tpe.check_space(NESTED).conditional
    assert joint_tpe.check_space({"m": NESTED, "x": hp.uniform("x", 0, 1)}).conditional
    assert not joint_tpe.check_space({"c": hp.choice("c", [1, 2]), "x": hp.uniform("x", 0, 1)}).conditional
    # a choice whose options hold no hyperparameters conditions nothing
    assert not joint_tpe.check_space(hp.choice("c", [{"a": 1}, {"b": 2}])).conditional
