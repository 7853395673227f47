"""The command-line tools' progress bars: on a terminal only, so captured output and logs stay clean."""

import io
import sys

from u2pl_ray.console import bar


def test_bars_pass_items_through_and_stay_off_without_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert list(bar(range(5), total=5, desc="x")) == [0, 1, 2, 3, 4]
    assert sys.stderr.getvalue() == ""


def test_bars_draw_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert list(bar(range(3), total=3, desc="convert")) == [0, 1, 2]
    assert "convert" in sys.stderr.getvalue() and "/3" in sys.stderr.getvalue()
