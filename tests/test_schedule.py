"""The :class:`thermospin_mc.Schedule` type (docs/model.md 14): validation, the ramp's
staircase, stage look-up, channel matching, identity and the merged stages the
solvers run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.physics.schedule import stage_of


def _model(dT=0.0, N=5, **kw):
    return tsm.paper_model("pump", N=N, delta_T=dT, **kw)


def _one_line_error(call, *parts):
    with pytest.raises(ValueError) as exc:
        call()
    text = str(exc.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)
    return text


# --------------------------------------------------------------------------- validation
def test_a_valid_schedule_and_its_views():
    a, b = _model(0.0), _model(2.0)
    s = tsm.Schedule([(0.0, a), (4, b), (10.0, a)])
    assert len(s) == 3 and s.N == 5
    assert s.times.tolist() == [0.0, 4.0, 10.0] and isinstance(s.stages[1][0], float)
    assert s.models == (a, b, a) and s.first is a
    assert s.initial == a.initial and s.initial_sectors == a.initial_sectors
    assert s.alpha_method == a.alpha_method and not s.is_mixed
    assert "stage 1 from t = 4" in repr(s)
    # the returned times are a copy
    s.times[0] = 99.0
    assert s.times[0] == 0.0


@pytest.mark.parametrize("stages,parts", [
    ("abc", ["stages must be a sequence"]),
    (5, ["stages must be a sequence"]),
    ([], ["at least one stage"]),
    ([(0.0,)], ["stage 0:", "(t, model) pair"]),
    ([(0.0, "model")], ["stage 0:", "model must be a ChainModel", "str"]),
    ([(True, None)], ["stage 0:", "t must be a finite real number"]),
    ([(float("nan"), None)], ["stage 0:", "finite real number"]),
    ([(0.5, "A")], ["stage 0:", "must start at t = 0"]),
    ([(0.0, "A"), (-1.0, "A")], ["stage 1:", "negative"]),
    ([(0.0, "A"), (2.0, "A"), (2.0, "B")], ["stage 2:", "not after stage 1", "increase"]),
    ([(0.0, "A"), (3.0, "A"), (1.0, "B")], ["stage 2:", "not after stage 1"]),
    ([(0.0, "A"), (1.0, "N4")], ["stage 1:", "N = 4 differs from stage 0's N = 5"]),
])
def test_bad_stages_are_refused_in_one_line_naming_the_stage(stages, parts):
    models = {"A": _model(0.0), "B": _model(1.0), "N4": _model(0.0, N=4, pump_site=2)}
    if isinstance(stages, list):
        stages = [tuple(models.get(x, x) if isinstance(x, str) and x in models else x
                        for x in item) for item in stages]
    _one_line_error(lambda: tsm.Schedule(stages), *parts)


def test_a_channel_name_keeps_its_kind_and_site():
    N = 5
    base = tsm.ChainModel(N=N, channels=[tsm.Loss(site=1, rate=1.0, name="out")])
    moved = base.with_(channels=[tsm.Loss(site=2, rate=1.0, name="out")])
    kind = base.with_(channels=[tsm.Pump(site=1, rate=1.0, name="out")])
    _one_line_error(lambda: tsm.Schedule([(0.0, base), (1.0, moved)]),
                    "stage 1:", "'out'", "site 2", "site 1 in stage 0", "keeps its kind")
    _one_line_error(lambda: tsm.Schedule([(0.0, base), (1.0, base), (2.0, kind)]),
                    "stage 2:", "pump", "loss")
    # a different rate, or the channel missing from a stage, is fine
    slower = base.with_(channels=[tsm.Loss(site=1, rate=0.2, name="out")])
    closed = tsm.ChainModel(N=N)
    s = tsm.Schedule([(0.0, closed), (1.0, base), (2.0, closed), (3.0, slower)])
    assert [c.name for c in s.channels] == ["out"]
    assert s.channels[0].rate == 1.0  # the record of the first stage that has it


def test_channels_union_rates_and_kinds():
    a = _model(0.0)  # loss_left, loss_right, pump
    b = tsm.with_dephasing(a.with_(gamma_pump=0.0), 0.5, sites=[2])
    s = tsm.Schedule([(0.0, a), (2.0, b)])
    assert [c.name for c in s.channels] == ["loss_left", "loss_right", "pump", "dephasing@2"]
    assert s.rates(1.0) == {"loss_left": a.gamma, "loss_right": a.gamma,
                            "pump": a.gamma_pump, "dephasing@2": 0.0}
    assert s.rates(2.0)["pump"] == 0.0 and s.rates(2.0)["dephasing@2"] == 0.5
    assert s.has_kind("dephasing") and s.has_kind("pump")
    assert s.reachable_sectors() == list(range(0, 6))
    loss = tsm.paper_model("loss", N=5)
    s = tsm.Schedule([(0.0, loss), (1.0, loss.with_(gamma=0.0))])
    assert s.reachable_sectors() == [0, 1]


# --------------------------------------------------------------------------- look-up
def test_model_at_takes_the_stage_that_starts_at_a_boundary():
    a, b, c = _model(0.0), _model(1.0), _model(2.0)
    s = tsm.Schedule([(0.0, a), (2.0, b), (5.0, c)])
    assert s.model_at(0.0) is a and s.model_at(1.999) is a
    assert s.model_at(2.0) is b and s.model_at(4.5) is b
    assert s.model_at(5.0) is c and s.model_at(1e9) is c
    assert s.model_at(-1.0) is a  # before the start: stage 0
    idx = stage_of(s.times, [0.0, 2.0, 3.0, 5.0, 7.0])
    assert idx.tolist() == [0, 1, 1, 2, 2]
    # side="left": the stage whose propagator reaches t (a jump at a boundary)
    assert stage_of(s.times, [0.0, 2.0, 5.0, 5.5], side="left").tolist() == [0, 0, 1, 2]
    assert stage_of(s.times, 2.0) == 1 and isinstance(stage_of(s.times, 2.0), int)


# --------------------------------------------------------------------------- ramp
def _recording(calls):
    def model_at(t):
        calls.append(t)
        return _model(float(np.clip(t, 0.0, 3.0)))
    return model_at


def test_ramp_from_zero_is_a_midpoint_staircase():
    calls = []
    s = tsm.Schedule.ramp(_recording(calls), 0.0, 2.0, 4)
    assert s.times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert calls == [0.25, 0.75, 1.25, 1.75, 2.0]
    assert s.model_at(0.6) == _model(0.75) and s.model_at(2.0) == _model(2.0)


def test_ramp_from_a_later_start_holds_the_start_model_before_it():
    calls = []
    s = tsm.Schedule.ramp(_recording(calls), 1.0, 3.0, 2)
    assert s.times.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert calls == [1.0, 1.5, 2.5, 3.0]
    assert s.model_at(0.5) == _model(1.0) and s.model_at(10.0) == _model(3.0)
    one = tsm.Schedule.ramp(_recording([]), 0.0, 1.0, 1)
    assert one.times.tolist() == [0.0, 1.0]


def test_ramp_refusals_are_one_line():
    good = _recording([])

    def raises(t):
        raise RuntimeError("bad\nsecond line")

    _one_line_error(lambda: tsm.Schedule.ramp(raises, 0.0, 1.0, 2),
                    "model_at(0.25) raised RuntimeError: bad")
    _one_line_error(lambda: tsm.Schedule.ramp(lambda t: "junk", 0.0, 1.0, 2),
                    "model_at(0.25) returned str", "expected a ChainModel")
    _one_line_error(lambda: tsm.Schedule.ramp(lambda t: None, 1.0, 2.0, 2),
                    "model_at(1.0) returned NoneType")
    _one_line_error(lambda: tsm.Schedule.ramp(5, 0.0, 1.0, 2), "model_at must be callable")
    _one_line_error(lambda: tsm.Schedule.ramp(good, -1.0, 1.0, 2), "t_start must be >= 0")
    _one_line_error(lambda: tsm.Schedule.ramp(good, 1.0, 1.0, 2), "t_stop must be > t_start")
    _one_line_error(lambda: tsm.Schedule.ramp(good, 0.0, float("inf"), 2), "t_stop",
                    "finite")
    _one_line_error(lambda: tsm.Schedule.ramp(good, 0.0, 1.0, 0), "steps must be an integer")
    _one_line_error(lambda: tsm.Schedule.ramp(good, 0.0, 1.0, 2.5), "steps")
    _one_line_error(lambda: tsm.Schedule.ramp(good, 0.0, 1.0, True), "steps")
    # a model with another N from model_at: the schedule names the stage
    _one_line_error(lambda: tsm.Schedule.ramp(
        lambda t: _model(0.0, N=5 if t < 0.5 else 7), 0.0, 1.0, 2), "stage 1:", "N = 7")


# --------------------------------------------------------------------------- identity
def test_to_dict_from_dict_round_trip_and_fingerprint():
    mix = tsm.mixture([((1,), 0.25), ((2, 4), 0.75)])
    a = tsm.ChainModel(N=4, profile=tsm.BondCouplings((1.0, 0.5, 2.0)),
                       anisotropy=(0.5, 1.0, 1.5), fields=(0.1, 0.0, -0.2, 0.3),
                       channels=[tsm.Loss(site=1, rate=0.7), tsm.Dephasing(site=3, rate=0.2)],
                       initial=mix)
    b = a.with_(channels=[tsm.Pump(site=2, rate=0.4)], profile=tsm.LinearProfile(0.0, 1.5))
    s = tsm.Schedule([(0.0, a), (1.25, b), (3.0, a)])
    d = json.loads(json.dumps(s.to_dict()))
    assert d["N"] == 4 and [x["t"] for x in d["schedule"]] == [0.0, 1.25, 3.0]
    back = tsm.Schedule.from_dict(d)
    assert back == s and hash(back) == hash(s) and back.fingerprint() == s.fingerprint()
    for (t1, m1), (t2, m2) in zip(back.stages, s.stages, strict=True):
        assert t1 == t2 and m1 == m2
    other = tsm.Schedule([(0.0, a), (1.5, b), (3.0, a)])
    assert other != s and other.fingerprint() != s.fingerprint()
    assert s != a  # not equal to a model
    _one_line_error(lambda: tsm.Schedule.from_dict({"N": 4}), "'schedule' list")
    _one_line_error(lambda: tsm.Schedule.from_dict([1, 2]), "'schedule' list")


def test_dynamic_stages_merge_equal_neighbours_and_drop_late_stages():
    a, b = _model(0.0), _model(2.0)
    a2 = a.with_(initial=(3,))  # the same generator, another (ignored) initial state
    s = tsm.Schedule([(0.0, a), (1.0, a2), (2.0, b), (3.0, b), (4.0, a), (6.0, b)])
    assert [t for t, _ in s.dynamic_stages()] == [0.0, 2.0, 4.0, 6.0]
    assert s.dynamic_stages()[0][1] is a  # stage 0 keeps the initial state
    assert [t for t, _ in s.dynamic_stages(6.0)] == [0.0, 2.0, 4.0]  # t >= t_end dropped
    assert [t for t, _ in s.dynamic_stages(4.5)] == [0.0, 2.0, 4.0]
    assert [t for t, _ in s.dynamic_stages(2.0)] == [0.0]
    assert [t for t, _ in s.dynamic_stages(0.0)] == [0.0]
    same = tsm.Schedule([(0.0, a), (1.0, a), (5.0, a2)])
    assert len(same.dynamic_stages()) == 1
