"""A sweep's wall counts every command that ran it, not only the one that finished it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from raygenre.report.tables import SweepFacts, share_words, training_share
from raygenre.storage import Location
from raygenre.sweep import clock
from raygenre.sweep.clock import WallClock, read_spans


def _facts(wall: clock.SweepWall) -> SweepFacts:
    return SweepFacts(name="g", preset="cpu", preset_why="", data="", run_folder="", plan="",
                      trials="", concurrency=2, wall_s=wall.total_s, wall_words=wall.words(),
                      wall_known=not wall.untimed_runs, command="")


def test_a_resumed_sweep_counts_the_commands_before_it(tmp_path: Path) -> None:
    state = Location.parse(tmp_path / "sweep_wall.state")
    with WallClock(state, resumed=False) as first:
        time.sleep(0.3)
    with WallClock(state, resumed=True) as second:
        time.sleep(0.1)
    wall = second.wall()
    assert len(wall.spans) == 2 and not wall.untimed_runs
    assert wall.spans[0] == pytest.approx(first.wall().total_s)
    assert wall.spans[0] >= 0.3 and wall.spans[1] >= 0.1
    assert wall.total_s == pytest.approx(sum(wall.spans))
    assert "over 2 commands (this one" in wall.words()
    cells = [{"trial_id": "a", "train_s": 0.2}]
    assert training_share(cells, _facts(wall)) == pytest.approx(0.2 / (wall.total_s * 2))


def test_a_resume_of_a_sweep_from_before_walls_were_kept_says_its_wall_is_partial(
        tmp_path: Path) -> None:
    with WallClock(Location.parse(tmp_path / "sweep_wall.state"), resumed=True) as c:
        pass
    wall = c.wall()
    assert wall.untimed_runs and "not counted" in wall.words()
    facts = _facts(wall)
    # A share over a wall that misses the sweep's training would be far above 1.
    assert training_share([{"trial_id": "a", "train_s": 3000.0}], facts) is None
    assert "not known" in share_words(None, 2)


def test_a_killed_command_counts_up_to_its_last_tick(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "TICK_S", 0.05)
    state = Location.parse(tmp_path / "sweep_wall.state")
    running = WallClock(state, resumed=False).__enter__()
    try:
        time.sleep(0.4)
        # What a command started after a kill would read: the file as the last tick left it.
        (start, end), = read_spans(state)
        assert end - start >= 0.25
    finally:
        running.__exit__(None, None, None)


@pytest.mark.parametrize("text", ["{not json", json.dumps({"start": 1}), json.dumps([[1]])])
def test_a_damaged_wall_record_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sweep_wall.state"
    path.write_text(text)
    with pytest.raises(ValueError, match="sweep_wall.state"):
        with WallClock(Location.parse(path), resumed=True):
            pass
    assert path.read_text() == text  # nothing overwritten
