"""bench/run.py keeps the figures of the run it replaces, so results.json has before and after."""

from __future__ import annotations

from bench import run


def test_before_holds_the_replaced_runs_headline_figures() -> None:
    previous = {
        "machine": {"date": "2026-12-03"}, "plain_median_ms": 4.5, "large_25mb_s": 1.56,
        "large_25mb_detail": {"peak_rss_mb": 303.5, "base_rss_mb": 199.7, "size_mb": 33.8},
        "peer": {"ratio": 0.45, "ratio_runs": [0.44, 0.55, 0.45], "ours_msgs_per_s": 137.4,
                 "rspamd_msgs_per_s": 306.1, "git_commit": "abc", "resolver": "long text",
                 "same_work": {"ratio": 1.16}},
        "before": {"plain_median_ms": 9.9},  # an older run's: not carried on
        "unrelated": 1,
    }
    before = run.headline_of(previous)
    assert before["date"] == "2026-12-03"
    assert before["plain_median_ms"] == 4.5
    assert before["large_25mb_increment_mb"] == 103.8  # from the detail of a run without the key
    assert before["peer"] == {"ratio": 0.45, "ratio_runs": [0.44, 0.55, 0.45],
                              "ours_msgs_per_s": 137.4, "rspamd_msgs_per_s": 306.1,
                              "git_commit": "abc", "same_work_ratio": 1.16}
    assert "before" not in before and "unrelated" not in before


def test_a_recorded_increment_is_kept_as_recorded() -> None:
    before = run.headline_of({"large_25mb_increment_mb": 45.5,
                              "large_25mb_detail": {"peak_rss_mb": 300.0, "base_rss_mb": 200.0}})
    assert before["large_25mb_increment_mb"] == 45.5
