"""Reported means: progress reports cover their own steps; checkpoints cover the whole period."""

from u2pl_ray.engine.metrics_window import MetricsWindow


def test_recent_covers_the_steps_since_the_last_report_and_summary_the_period():
    w = MetricsWindow()
    for loss in (1.0, 3.0):
        w.add({"loss": loss}, images=8)
    first = w.recent()
    assert first["loss"] == 2.0
    w.add({"loss": 10.0}, images=8)
    w.add_count("nonfinite_skipped", 1)
    second = w.recent()
    assert second["loss"] == 10.0 and second["nonfinite_skipped"] == 1
    assert w.summary()["loss"] == (1.0 + 3.0 + 10.0) / 3
    assert w.recent().keys() == {"images_per_s", "nonfinite_skipped"}, "an empty span reports no means"
    w.reset()
    w.add({"loss": 5.0})
    assert w.summary()["loss"] == 5.0 and "nonfinite_skipped" not in w.summary()
