"""The fallback policy: plain decoding while speculation measurably does not pay, then a probe."""
from dataclasses import replace

import pytest

from core.trace import fallback_switches
from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.config import FallbackConfig
from core.policy import (RECENT_CYCLES, FallbackState, decide, expected_speedup, optimistic_speedup,
                         overall_speedup, recent, record_plain_estimate, record_step)
from core.registry import attach, random_drafter
from core.trace import summarize

CFG = FallbackConfig(window=3, cooldown=5)


def test_slow_cycles_switch_to_plain_then_probe_again():
    state = FallbackState(plain_ms=40.0)
    for _ in range(3):
        assert decide(state, CFG)[0] == "spec"
        record_step(state, "spec", emitted=1, ms=60.0, cfg=CFG)  # 1 token per 60 ms vs 40 ms plain
    assert expected_speedup(state, CFG.window) == 40.0 / 60.0
    mode, why = decide(state, CFG)
    assert mode == "plain" and "0.67x" in why
    for left in range(5, 0, -1):
        mode, why = decide(state, CFG)
        assert mode == "plain" and f"for {left} more step{'s' if left > 1 else ''}, then probe again" in why
        record_step(state, "plain", emitted=1, ms=40.0, cfg=CFG)
    assert decide(state, CFG)[0] == "spec"  # probe again


def test_probes_that_keep_failing_back_off_and_a_paying_one_resets():
    cfg = FallbackConfig(window=2, cooldown=3, max_cooldown=10)
    state = FallbackState(plain_ms=40.0)
    waits = []
    for _ in range(4):  # four failed probes: the wait doubles, then stops at max_cooldown
        for _ in range(2):
            assert decide(state, cfg)[0] == "spec"
            record_step(state, "spec", emitted=1, ms=60.0, cfg=cfg)
        mode, why = decide(state, cfg)
        assert mode == "plain" and f"for {state.cooldown_left} steps" in why
        waits.append(state.cooldown_left)
        while state.cooldown_left:
            assert decide(state, cfg)[0] == "plain"
            record_step(state, "plain", emitted=1, ms=40.0, cfg=cfg)
    assert waits == [3, 6, 10, 10]
    for _ in range(2):  # a probe that pays keeps speculating and resets the back-off
        assert decide(state, cfg)[0] == "spec"
        record_step(state, "spec", emitted=4, ms=60.0, cfg=cfg)
    assert decide(state, cfg)[0] == "spec" and state.failed_probes == 0
    for _ in range(3):  # slow cycles fill the window again: the first wait, not a longer one
        record_step(state, "spec", emitted=1, ms=100.0, cfg=cfg)
    assert decide(state, cfg)[0] == "plain" and state.cooldown_left == 3


def test_a_long_window_judges_after_judge_after_cycles_and_rides_out_a_short_slow_patch():
    cfg = FallbackConfig(window=16, judge_after=4, cooldown=5)
    state = FallbackState(plain_ms=40.0)
    for _ in range(8):  # good cycles: 3 tokens per 60 ms, 2x plain decoding
        assert decide(state, cfg)[0] == "spec"
        record_step(state, "spec", emitted=3, ms=60.0, cfg=cfg)
    for _ in range(4):  # a slow patch: alone it runs at 0.67x, but the window still averages 1.5x
        assert decide(state, cfg)[0] == "spec"
        record_step(state, "spec", emitted=1, ms=60.0, cfg=cfg)
    assert expected_speedup(state, 4) < 1.0 < expected_speedup(state, cfg.window)
    assert decide(state, cfg)[0] == "spec"
    assert recent(state, RECENT_CYCLES) == (4, 240.0)  # what the tree sizing reads: the last 4 cycles only
    fresh = FallbackState(plain_ms=40.0)  # slow from the start: judged after judge_after cycles, not window
    for _ in range(4):
        assert decide(fresh, cfg)[0] == "spec"
        record_step(fresh, "spec", emitted=1, ms=60.0, cfg=cfg)
    assert decide(fresh, cfg)[0] == "plain"


def test_confidence_gives_bursty_cycles_the_benefit_of_the_doubt_but_not_steady_slow_ones():
    bursty, cfg = FallbackState(plain_ms=40.0), FallbackConfig(window=4, cooldown=5)
    for emitted in (1, 1, 1, 2):  # 5 tokens in 240 ms: 0.83x plain decoding, but one cycle accepted a token
        record_step(bursty, "spec", emitted=emitted, ms=60.0, cfg=cfg)
    assert expected_speedup(bursty, 4) == pytest.approx(40.0 * 5 / 240)
    # mean 1.25 tokens, standard error 0.25: one standard error up is 1.5 tokens per cycle, 1.0x plain decoding
    assert optimistic_speedup(bursty, 4, confidence=1.0) == pytest.approx(1.0)
    assert decide(replace(bursty, spec_tokens=list(bursty.spec_tokens)), cfg)[0] == "plain"
    assert decide(bursty, replace(cfg, confidence=1.0))[0] == "spec"
    steady = FallbackState(plain_ms=40.0, spec_tokens=[1] * 4, spec_ms=[60.0] * 4)  # no spread: no doubt
    assert optimistic_speedup(steady, 4, confidence=2.0) == expected_speedup(steady, 4)
    assert decide(steady, replace(cfg, confidence=2.0))[0] == "plain"
    with pytest.raises(ValueError, match="confidence"):
        FallbackConfig(confidence=-1.0)


def test_a_generation_well_ahead_rides_out_a_slow_window_until_its_lead_shrinks():
    cfg = FallbackConfig(window=4, judge_after=4, cooldown=5, ahead=1.5)
    state = FallbackState(plain_ms=40.0)
    for _ in range(6):  # 3 tokens per 60 ms: 2x plain decoding
        record_step(state, "spec", emitted=3, ms=60.0, cfg=cfg)
    for _ in range(4):  # then a slow patch, 1 token per 60 ms
        record_step(state, "spec", emitted=1, ms=60.0, cfg=cfg)
    assert expected_speedup(state, 4) == pytest.approx(40.0 / 60.0)
    assert overall_speedup(state) == pytest.approx(40.0 * 22 / 600)  # 1.47x: below the 1.5x lead asked for
    assert decide(replace(state), replace(cfg, ahead=1.4))[0] == "spec"  # still 1.4x ahead: ride it out
    assert decide(replace(state), replace(cfg, ahead=0.0))[0] == "plain"  # judged on the window alone
    assert "(break-even 0.90x)" in decide(replace(state), replace(cfg, ahead=0.0))[1]
    kind, why = decide(state, cfg)
    assert kind == "plain"  # the lead has shrunk below 1.5x: fall back, saying both speeds
    assert "ran at 0.67x plain decoding (break-even 0.90x, the answer so far at 1.47x)" in why
    record_step(state, "plain", emitted=1, ms=40.0, cfg=cfg)
    assert state.total_tokens == 23 and state.total_ms == 640.0  # plain steps count towards the generation too
    assert overall_speedup(FallbackState()) is None
    with pytest.raises(ValueError, match="ahead"):
        FallbackConfig(ahead=float("nan"))


def test_max_cooldown_below_cooldown_is_refused():
    with pytest.raises(ValueError, match="max_cooldown"):
        FallbackConfig(cooldown=12, max_cooldown=4)


def test_a_cycle_not_judged_counts_for_the_generation_and_the_tree_but_not_the_window():
    state = FallbackState(plain_ms=40.0)
    record_step(state, "spec", emitted=1, ms=200.0, cfg=CFG, judged=False)  # the drafter read a long prompt
    assert (state.total_tokens, state.total_ms) == (1, 200.0)
    assert recent(state, RECENT_CYCLES) == (1, 200.0)  # the stopping rule still has a speed to beat
    assert expected_speedup(state, CFG.window) is None and decide(state, CFG)[0] == "spec"
    for _ in range(CFG.window):
        record_step(state, "spec", emitted=2, ms=60.0, cfg=CFG)
    assert expected_speedup(state, CFG.window) == pytest.approx(40.0 * 2 / 60.0)  # judged on the others alone
    assert decide(state, CFG)[0] == "spec"


def test_good_cycles_keep_speculating():
    state = FallbackState(plain_ms=40.0)
    for _ in range(10):
        assert decide(state, CFG)[0] == "spec"
        record_step(state, "spec", emitted=4, ms=70.0, cfg=CFG)
    assert expected_speedup(state, CFG.window) > 2.2


def test_disabled_policy_always_speculates():
    state = FallbackState(plain_ms=1.0, spec_tokens=[1, 1, 1], spec_ms=[100.0] * 3)
    assert decide(state, FallbackConfig(enabled=False))[0] == "spec"


def test_engine_falls_back_with_a_useless_drafter_and_stays_lossless(tiny_target):
    proposer = attach(random_drafter(tiny_target, "dense", seed=2), tiny_target, "eagle")
    tree = TreeConfig(top_k=8, depth=6, total_tokens=64)
    cfg = EngineConfig(max_new_tokens=40, tree=tree)
    plain = summarize(SpecDecoder(tiny_target).generate("Hello there", cfg)).text_tokens
    fallback = FallbackConfig(window=2, cooldown=6, margin=100.0)
    records = SpecDecoder(tiny_target, proposer).generate("Hello there", replace(cfg, fallback=fallback))
    steps = [r for r in records if r["type"] == "step"]
    kinds = [r["kind"] for r in steps[1:]]
    # the first cycle (the drafter reads the prompt) is not judged: two judged cycles, then the switch
    assert kinds[:3] == ["spec"] * 3 and kinds[3:9] == ["plain"] * 6 and kinds[9:12] == ["spec"] * 3
    assert "fallback" in steps[4]["note"] and "2 cycles ran at" in steps[4]["note"]
    assert summarize(records).text_tokens == plain
    switches = fallback_switches(records)  # what the bench's per-prompt JSON reports
    assert switches["plain_steps"] == kinds.count("plain") >= 6
    assert switches["fallbacks"][0] == {"after_tokens": steps[3]["new_tokens"], "why": steps[4]["note"]}
    # the probe's first cycle catches up on the plain steps and is not judged either: two more, then plain again
    assert kinds[12] == "plain" and "2 cycles ran at" in steps[13]["note"]
    assert len(switches["fallbacks"]) == sum(note.startswith("fallback: the last") for note in
                                             (s.get("note", "") for s in steps))


def test_plain_steps_priced_from_each_verification_need_no_timed_forwards(tiny_target):
    proposer = attach(random_drafter(tiny_target, "dense", seed=2), tiny_target, "eagle")
    tree = TreeConfig(top_k=8, depth=6, total_tokens=64, adaptive=True)
    cfg = EngineConfig(max_new_tokens=40, tree=tree)
    plain = summarize(SpecDecoder(tiny_target).generate("Hello there", cfg)).text_tokens
    fallback = FallbackConfig(window=2, cooldown=6, margin=100.0, plain_from_verify=True)
    decoder = SpecDecoder(tiny_target, proposer)
    records = decoder.generate("Hello there", replace(cfg, fallback=fallback))
    kinds = [r["kind"] for r in records if r["type"] == "step"][1:]
    assert kinds[:3] == ["spec"] * 3 and kinds[3] == "plain"  # judged on the verifications' own estimate
    assert decoder._plain_ms is None  # so no one-token forwards were timed for it
    assert summarize(records).text_tokens == plain


def test_a_plain_estimate_joins_the_running_mean():
    state = FallbackState()
    record_plain_estimate(state, 50.0)
    record_plain_estimate(state, 40.0)
    assert state.plain_ms == pytest.approx(48.0)


def test_the_simulator_replays_the_policy_and_a_price_too_low_makes_it_fall_back():
    from benchmarks.fallback_sim import Trace, price_errors, replay, speedup
    trace = Trace(starts=list(range(0, 60, 3)), tokens=[3] * 20, ms=[100.0] * 20)  # 1.2x a 40 ms plain step
    assert replay(trace, 40.0, FallbackConfig()) == (2000.0, 0)
    ms, plain_steps = replay(trace, 40.0, FallbackConfig(), price_error=0.7)  # priced at 28 ms: 0.84x, "loses"
    assert plain_steps >= FallbackConfig().cooldown and ms > 2000.0  # and the plain steps really cost more
    assert speedup([trace], [40.0], FallbackConfig(enabled=False)) == (pytest.approx(1.2), 0.0)
    errors = price_errors(2, 0.1, 3, seed=1)
    assert len(errors) == 2 and all(len(e) == 3 and 0.5 < min(e) <= max(e) < 2.0 for e in errors)
    assert price_errors(2, 0.0, 3) is None and price_errors(2, 0.1, 3, seed=1) == errors
