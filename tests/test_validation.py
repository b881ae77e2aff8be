"""Validation before change: a batch holding one invalid event (built by hand, as a library
caller may) is refused whole, with the same EventError (index, field) on every engine, and
the state (also after reopening a durable engine) is exactly as before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardcore import Closed, Completed, EventError, Placed, Redeem, load_campaign, open_engine
from rewardcore.events import FIELD_RULES, INT64_MAX, events_from_dicts, validate_batch

from .campaigns import IN_WINDOW, campaign_toml, make_campaign
from .events import closed, completed, placed, redeem

CAMPAIGN = make_campaign(regions=((1, 3, ((2, 5), (3, 9))), (2, 2, ((2, 4),))),
                         prizes=(("mug", 5, 3),), settle_on="placed")


def snap(engine) -> dict:
    return {"state": engine.export_state(), "stock": engine.stock()}


def valid_events() -> st.SearchStrategy:
    order = st.sampled_from([f"o{i}" for i in range(6)])
    return st.one_of(
        st.builds(placed, order, st.sampled_from([1, 2, 9]), st.sampled_from(["a1", "a2"])),
        st.builds(closed, order),
        st.builds(completed, order),
        st.builds(redeem, st.sampled_from(["r1", "r2"]), st.sampled_from(["a1", "a2"]),
                  st.sampled_from(["mug", "nope"])),
    )


class _Str(str):
    pass


class _Int(int):
    pass


def _bad_values(rule) -> list:
    if rule.is_str:
        return [None, 1, 1.5, b"o1", "", "x" * (rule.max + 1), ["o1"], _Str("o1"), True]
    return [None, True, False, 1.5, float("nan"), "2", [1], _Int(3), rule.min - 1,
            rule.max + 1, 2**63, -(2**63) - 1, 2**64, -(2**64)]


VALID = {
    Placed: placed("ok"), Closed: closed("ok"), Completed: completed("ok"),
    Redeem: redeem("rok", "a1"),
}
# every (class, field, bad value), and things that are no event at all (field None)
BAD_CASES = [(cls, rule.name, v) for cls, rules in FIELD_RULES.items() for rule in rules
             for v in _bad_values(rule)]
NOT_EVENTS = [{"type": "placed", "order_id": "o1"}, object(), None, ("placed",), "placed"]


def _bad_event(cls, field: str, value):
    return msgspec.structs.replace(VALID[cls], **{field: value})


def test_cases_cover_qty_and_boundaries():
    assert (Redeem, "qty", 0) in BAD_CASES and (Redeem, "qty", 1_000_001) in BAD_CASES
    assert (Placed, "region", -INT64_MAX - 1) in BAD_CASES
    assert any(c == (Placed, "order_id", "x" * 257) for c in BAD_CASES)


bad_event = st.one_of(
    st.sampled_from(BAD_CASES).map(lambda c: (_bad_event(*c), c[1])),
    st.sampled_from(NOT_EVENTS).map(lambda e: (e, None)),
    st.builds(lambda q: (redeem("rq", "a1", qty=q), "qty"),
              st.one_of(st.integers(max_value=0), st.integers(min_value=1_000_001))),
)


def _reopen(engine_url: str, engine):
    engine.close()
    return open_engine(CAMPAIGN, engine_url)


CHECK = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@CHECK
@given(before=st.lists(valid_events(), max_size=8), around=st.lists(valid_events(), max_size=12),
       at=st.integers(0, 12), bad=bad_event)
def test_invalid_event_refuses_the_whole_batch(engine_url, make_engine, before, around, at,
                                               bad):
    event, field = bad
    at = min(at, len(around))
    batch = [*around[:at], event, *around[at:]]
    engine = make_engine(CAMPAIGN)
    engine.apply(before)
    expected = snap(engine)
    with pytest.raises(EventError) as caught:
        engine.apply(batch)
    assert (caught.value.index, caught.value.field) == (at, field)
    assert f"event {at}" in str(caught.value)
    if field is not None:
        assert repr(field) in str(caught.value)
    assert snap(engine) == expected
    durable = engine_url.startswith("memory:///")
    if durable:
        engine = _reopen(engine_url, engine)
        assert snap(engine) == expected
    # still usable: the batch without the bad event goes through as on the reference
    engine.apply(around)
    ref = open_engine(CAMPAIGN, "reference://")
    ref.apply(before + around)
    assert snap(engine) == snap(ref)
    if durable:
        engine.close()


def test_python_check_names_index_and_field():
    with pytest.raises(EventError) as caught:
        validate_batch([placed("o1"), closed("o2"), _bad_event(Placed, "paid_cents", 49.9)])
    assert (caught.value.index, caught.value.field) == (2, "paid_cents")
    assert "event 2: placed: field 'paid_cents' must be an int, not float" in str(caught.value)


def test_a_dict_says_to_use_events_from_dicts(make_engine):
    engine = make_engine(CAMPAIGN)
    with pytest.raises(EventError, match="events_from_dicts"):
        engine.apply([{"type": "placed", "order_id": "o1"}])


def test_events_from_dicts_validates_like_the_decoders():
    rows = [{"type": "placed", "order_id": "o1", "merchant_id": "m1", "agent_id": "a1",
             "region": 1, "paid_cents": 100, "ts": IN_WINDOW},
            {"type": "redeem", "redemption_id": "r1", "beneficiary": "a1", "prize": "mug",
             "ts": IN_WINDOW}]
    got = events_from_dicts(rows)
    assert got == [placed("o1"), redeem("r1", "a1")]
    rows[1]["qty"] = -100
    with pytest.raises(EventError) as caught:
        events_from_dicts(rows)
    assert (caught.value.index, caught.value.field) == (1, "qty")


@pytest.mark.parametrize("qty", [-100, 0, 2**62, "2", None])
def test_engine_redeem_validates_its_arguments(make_engine, qty):
    engine = make_engine(CAMPAIGN)
    engine.apply([placed("o1")])  # settle_on = placed: a1 holds 5 confirmed points
    expected = snap(engine)
    with pytest.raises(EventError) as caught:
        engine.redeem("r1", "a1", "mug", qty=qty, ts=IN_WINDOW)
    assert caught.value.field == "qty"
    assert snap(engine) == expected


DURABLE_URLS = {
    "memory": "memory://{d}/state?fsync=batch",
    "shm": "shm://rc-validation-{pid}?dir={d}/state&orders=4096&fsync=batch",
}


@pytest.mark.parametrize("kind", sorted(DURABLE_URLS))
def test_refused_batch_then_kill_keeps_what_was_acknowledged(tmp_path, kind):
    """A durable engine refuses a batch, the process is killed (SIGKILL), the store reopens:
    every acknowledged batch is there and nothing of the refused one."""
    url = DURABLE_URLS[kind].format(d=tmp_path, pid=os.getpid())
    campaign_file = tmp_path / "c.toml"
    campaign_file.write_text(campaign_toml(regions=((1, 3, ((2, 5), (3, 9))),),
                                           prizes=(("mug", 5, 3),), settle_on="placed"))
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from rewardcore import EventError, load_campaign, open_engine
        from tests.events import placed, redeem
        e = open_engine(load_campaign({str(campaign_file)!r}), {url!r})
        e.apply([placed("o1"), placed("o2", agent="a2")])
        try:
            e.apply([placed("o3"), redeem("r1", "a1", qty=2**62), placed("o4")])
        except EventError as exc:
            print("refused", exc.index, exc.field, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert run.stdout.split() == ["refused", "1", "qty"]
    campaign = load_campaign(campaign_file)
    ref = open_engine(campaign, "reference://")
    ref.apply([placed("o1"), placed("o2", agent="a2")])
    engine = open_engine(campaign, url)
    try:
        assert snap(engine) == snap(ref)
        engine.apply([placed("o3")])  # the store goes on where it was
        ref.apply([placed("o3")])
        assert snap(engine) == snap(ref)
    finally:
        engine.close()
        if kind == "shm":
            subprocess.run([sys.executable, "-m", "rewardcore", "shm-rm",
                            f"rc-validation-{os.getpid()}"], capture_output=True, timeout=60)
