"""The run folder under stress: one writer at a time, damaged checkpoints and config.json, a full disk.

A full disk is simulated at the last OS call of a durable write, ``os.fsync`` (the ``disk_full`` fixture).
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidprep.index import run_index
from reidprep.shards.build import build_shards
from reidprep.synth import generate_dataset
from reidschemas.config import ShardsConfig
from reidschemas.safeio import DiskFull, temporary_path
from reidtrain.atomic import append_line, atomic_save
from reidtrain.cli import app

runner = CliRunner()
FIT = ["--model", "baseline", "--backbone", "tiny", "--random-init", "--recipe", "baseline-tiny-demo"]
FIT += ["--seed", "3", "--no-progress"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("run_folder")
    generate_dataset(tmp / "data", kind="person", ids=8, images_per_id=4, seed=0)
    run_index(tmp / "work", "rgbnt201", tmp / "data")
    return build_shards(tmp / "work", ShardsConfig(missing="null")).out_dir


def _fit(shards: Path, run: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["fit", "--shards", str(shards), "--output", str(run), *FIT, *extra])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def one_epoch(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "one"
    code, output = _fit(shards, run, "--epochs", "1")
    assert code == 0, output
    return run


@pytest.fixture
def run(one_epoch: Path, tmp_path: Path) -> Path:
    """A private copy of a run folder trained for one epoch of the recipe's three."""
    return Path(shutil.copytree(one_epoch, tmp_path / "run"))


def _error_line(output: str) -> str:
    """The one error line a failed command printed last; there is no traceback."""
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: "), output
    return last


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _wait_for(condition, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_fit_is_refused_naming_the_holder_and_a_killed_fits_lock_is_taken_over(
    shards: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["--set", "epochs=200"]  # long enough to still be training when the second fit starts
    command = [sys.executable, "-m", "reidtrain.cli", "fit", "--shards", str(shards), "--output", str(run), *FIT]
    first = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:

        def holds_lock() -> bool:
            assert first.poll() is None, first.communicate()[0]
            lock = run / ".lock"
            return lock.is_file() and f'"pid": {first.pid},' in lock.read_text()

        _wait_for(holds_lock, "the first fit to take the run folder's lock")
        code, output = _fit(shards, run, *args)
        line = _error_line(output)
        assert code == 2
        assert f"pid {first.pid} on {socket.gethostname()}" in line and str(run / ".lock") in line
        assert "Wait for it to finish" in line
        assert first.poll() is None  # the refused fit did not disturb the running one

        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        host = temporary_path(run / "x").name.split(".tmp-")[1].rsplit("-", 1)[0]
        dead = run / f".last.pt.tmp-{host}-{first.pid}"  # what a fit killed while saving leaves
        dead.write_bytes(b"half a checkpoint")
        busy = run / f".best.pt.tmp-{host}-{live.pid}"  # a live writer's file is never touched
        busy.write_bytes(b"being written")

        # the kill may also have caught the fit writing a file of its own: those are the dead writer's too
        gone = sorted(p.name for p in run.glob(f".*.tmp-{host}-{first.pid}"))
        code, output = _fit(shards, run, *args, "--epochs", "1")
        assert code == 0, output
        assert f"taking over a stale lock of pid {first.pid}" in output
        assert f"removed {len(gone)} temporary file(s) of writers that are gone: " in output
        assert all(name in output for name in gone) and dead.name in gone
        assert not dead.exists() and busy.exists()
        epochs = _epochs(run)
        assert epochs == list(range(1, len(epochs) + 1)) and epochs  # one writer: no epoch twice, none out of order
        assert json.loads((run / ".lock").read_text())["released"] is True
    finally:
        for process in (first, live):
            if process.poll() is None:
                process.kill()
            process.wait()
        if first.stdout is not None:
            first.stdout.close()


@pytest.mark.parametrize("damage", ["empty", "truncated", "text"])
def test_a_damaged_last_pt_is_one_line_with_the_way_out_and_deleting_it_starts_over(
    run: Path, shards: Path, damage: str
) -> None:
    last = run / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"hello"}[damage])
    size = last.stat().st_size
    code, output = _fit(shards, run, "--epochs", "2")
    line = _error_line(output)
    assert code == 2
    assert f"{last} is truncated or not a checkpoint ({size} bytes): delete it to start the run over" in line
    assert "best.pt cannot continue the run" in line

    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last"])
    line = _error_line(result.output)
    assert result.exit_code == 2 and str(last) in line and "--checkpoint best" in line

    last.unlink()  # the way out the message gives
    code, output = _fit(shards, run, "--epochs", "2")
    assert code == 0 and "resuming" not in output, output
    assert _epochs(run) == [1, 2]
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_a_model_only_or_damaged_checkpoint_names_what_it_lacks(run: Path, shards: Path) -> None:
    shutil.copyfile(run / "best.pt", run / "last.pt")  # best.pt holds no optimizer: it cannot continue the run
    code, output = _fit(shards, run, "--epochs", "2")
    line = _error_line(output)
    assert code == 2 and f"{run / 'last.pt'} cannot continue a run: it lacks optimizer, scheduler" in line

    best = run / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "best"])
    line = _error_line(result.output)
    assert result.exit_code == 2 and f"{best} is truncated or not a checkpoint (100 bytes)" in line
    assert "--checkpoint last" in line

    foreign = run / "other.pt"
    with zipfile.ZipFile(foreign, "w") as archive:  # a whole zip, not written by torch.save
        archive.writestr("hello.txt", "hello")
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", str(foreign)])
    line = _error_line(result.output)
    assert result.exit_code == 2 and f"{foreign} is damaged or not a checkpoint" in line


def test_a_truncated_config_json_is_rewritten_from_last_pt_or_named(run: Path, shards: Path) -> None:
    config = run / "config.json"
    whole = config.read_text()
    config.write_text(whole[: len(whole) // 2])
    code, output = _fit(shards, run, "--epochs", "2")  # last.pt records the configuration: resume and rewrite it
    assert code == 0 and "resuming" in output, output
    assert json.loads(config.read_text())["epochs"] == 2

    state = torch.load(run / "last.pt", weights_only=True)
    del state["config"]  # a checkpoint of an earlier version: config.json is its only record
    torch.save(state, run / "last.pt")
    config.write_text(whole[:40])
    code, output = _fit(shards, run, "--epochs", "3")
    line = _error_line(output)
    assert code == 2 and f"{config} is truncated or not valid JSON (40 bytes;" in line and "restore a copy" in line
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last"])
    line = _error_line(result.output)
    assert result.exit_code == 2 and f"{config} is truncated or not valid JSON" in line


def test_a_full_disk_in_fit_is_one_line_and_keeps_the_finished_epochs(
    run: Path, shards: Path, disk_full, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = run / "last.pt"
    disk_full("last.pt")  # saving epoch 2's last.pt fails with ENOSPC
    code, output = _fit(shards, run, "--epochs", "2")
    line = _error_line(output)
    assert code == 1
    assert f"no space left on the device writing {last} (about " in line and " needed" in line
    assert not list(run.glob(".*.tmp-*"))
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the finished epoch's checkpoint is whole
    monkeypatch.undo()
    code, output = _fit(shards, run, "--epochs", "2")  # after freeing space: epoch 2 again, its metrics line once
    assert code == 0 and "resuming" in output, output
    assert _epochs(run) == [1, 2]


def test_a_full_disk_before_the_first_write_and_in_eval_is_one_line(
    run: Path, shards: Path, tmp_path: Path, disk_full
) -> None:
    fresh = tmp_path / "fresh"
    disk_full("config.json")
    code, output = _fit(shards, fresh, "--epochs", "1")
    assert code == 1 and f"no space left on the device writing {fresh / 'config.json'}" in _error_line(output)
    assert not list(fresh.glob(".*.tmp-*")) and not (fresh / "config.json").exists()

    disk_full("rank_list.png")
    result = runner.invoke(app, ["eval", "--run", str(run), "--checkpoint", "last", "--rank-list", "2"])
    assert result.exit_code == 1, result.output
    assert f"no space left on the device writing {run / 'rank_list.png'}" in _error_line(result.output)
    assert not list(run.glob(".*.tmp-*")) and not (run / "rank_list.png").exists()


def test_ctrl_c_while_a_checkpoint_is_written_finishes_the_epochs_files_then_stops(
    run: Path, shards: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None
) -> None:
    real_save = torch.save
    saves: list[object] = []

    def save_after_ctrl_c(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if not saves:  # Ctrl-C arrives just as epoch 2's first checkpoint starts to be written
            os.kill(os.getpid(), signal.SIGINT)
        saves.append(obj)
        real_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "save", save_after_ctrl_c)
    code, output = _fit(shards, run, "--epochs", "3")
    assert code == 130, output
    assert "Traceback" not in output
    assert "stopping after the files of epoch 2 are written (press Ctrl-C again to stop at once)" in output
    assert (
        f"interrupted after epoch 2 of 3: {run / 'last.pt'} holds epoch 2 of 3; run the same command again to resume "
        "from epoch 3" in output
    )
    assert "epoch 2: loss " in output  # the epoch line was printed with its files
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 2 and _epochs(run) == [1, 2]
    assert not list(run.glob(".*.tmp-*"))


class _FileCtrlC(io.RawIOBase):
    """A file that receives Ctrl-C once ``after`` bytes were written to it (as a SIGINT during a long save would)."""

    def __init__(self, handle: io.BufferedWriter, after: int) -> None:
        self.handle, self.after, self.written = handle, after, 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.written += len(data)
        if self.written > self.after:
            raise KeyboardInterrupt
        return self.handle.write(data)

    def close(self) -> None:
        self.handle.close()
        super().close()


def test_a_ctrl_c_inside_torch_save_is_a_keyboard_interrupt_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)
    real_open = Path.open

    def open_with_ctrl_c(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]
        return _FileCtrlC(handle, after=5000) if mode == "wb" else handle

    monkeypatch.setattr(Path, "open", open_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):  # torch alone turns it into "RuntimeError: ... unexpected pos"
        atomic_save({"epoch": 2, "weights": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_a_failed_append_leaves_no_half_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.jsonl"
    append_line('{"epoch": 1}', path)

    def no_space(fd: int) -> None:  # the data reached the file; making it durable fails, as on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFull, match=f"writing {path}"):
        append_line('{"epoch": 2}', path)
    assert path.read_text() == '{"epoch": 1}\n'
