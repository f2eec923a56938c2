"""Sweeps against a real S3 endpoint (moto's server, tests/s3server.py): `--storage`, `--cache`
and `--data` all in one bucket; a driver killed mid-sweep resumes from the bucket on a fresh
machine's cache to the same numbers; prepared data reaches the bucket even when this machine had
it already; a bucket that refuses writes is an error before any trial; throttling is retried.

The tests that run a sweep are slow (`pytest -m slow`); they share one uninterrupted reference
run (a module fixture).
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raygenre.config import Config
from raygenre.data.features import FEATURES
from raygenre.data.ledger import LEGACY_FILE
from raygenre.data.prepared import PREPARED_FILES
from raygenre.data.sets import prepare

from .conftest import history_by_config, kill_tree, write_clip
from .s3server import WRITES, Fault, FaultProxy, S3Server, with_env
from .test_resume import _read_until

GENRES = ("blues", "jazz", "rock")
# Two trials (batch sizes), each standing for a 1- and a 2-epoch cell (--smoke turns the
# epochs axis into [1, 2]): a kill after the first epoch leaves the sweep half done.
GRID = ("description: the S3 tests' grid\nasha: false\n"
        "base: {model: cnn1, features: spectrogram}\n"
        "grid: {batch_size: [4, 6], epochs: [3, 5]}\n")


def _upload_genres(s3: S3Server, bucket: str, root: Path, tracks: int = 4) -> str:
    """A GTZAN-layout folder of generated clips, written under `root` and uploaded to
    s3://bucket/genres; returns that URI."""
    client = s3.client()
    for gi, genre in enumerate(GENRES):
        for k in range(tracks):
            ext = (".wav", ".au", ".flac")[k % 3]
            path = write_clip(root / genre / f"{genre}.{k:05d}{ext}", 11.0, seed=gi * 100 + k,
                              fmt="AU" if ext == ".au" else None)
            client.upload_file(str(path), bucket, f"genres/{genre}/{path.name}")
    return f"s3://{bucket}/genres"


# --- without Ray: the data, the write check, the retries -------------------------------------

def test_prepared_data_goes_to_the_bucket_even_when_prepared_here_before(
        s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: a set already prepared on this machine was reused and never shared,
    so every other machine prepared it again."""
    from raygenre.storage import Location

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "genres"
    for gi, genre in enumerate(GENRES):
        for k in range(3):
            write_clip(root / genre / f"{genre}.{k}.wav", 6.0, seed=gi * 10 + k)
    bucket = s3.bucket()
    cfg = Config(seed=1)
    here = prepare(root, tmp_path / "here", cfg)  # prepared before any bucket was named
    # A machine's own record beside the set (an older test ledger) is not the set's.
    (here.path / LEGACY_FILE).write_text('{"reader": "this machine"}\n')
    logs: list[str] = []
    again = prepare(root, tmp_path / "here", cfg, shared=Location(f"s3://{bucket}/cache"),
                    log=logs.append)
    assert again.reused and any("reusing prepared data" in m for m in logs), logs
    prefix = f"cache/prepared/{here.path.name}/"
    files = [k for k in s3.keys(bucket, prefix) if not k.endswith("/")]  # (not folder markers)
    assert files == sorted(prefix + f for f in PREPARED_FILES), logs
    # Another machine (an empty cache) fetches it instead of preparing it.
    logs.clear()
    there = prepare(root, tmp_path / "there", cfg, shared=Location(f"s3://{bucket}/cache"),
                    log=logs.append)
    assert any("fetched prepared data" in m for m in logs) and not any(
        "preparing" in m for m in logs), logs
    for name in PREPARED_FILES:
        assert (there.path / name).read_bytes() == (here.path / name).read_bytes(), name
    assert not (there.path / LEGACY_FILE).exists()


def test_bucket_reads_and_writes_are_retried_through_throttling(s3: S3Server,
                                                                tmp_path: Path) -> None:
    """Every write and read answered 503 SlowDown (or 500) a few times first still lands:
    pyarrow's S3 filesystem, which raygenre and Ray Tune both use, retries them. A bucket that
    never stops throttling is an error, not a hang."""
    bucket = s3.bucket()
    code = ("import sys\nfrom raygenre.storage import Location\n"
            "loc = Location.parse(sys.argv[1])\n"
            "(loc / 'a.txt').write_text('x' * 5000)\n"
            "print((loc / 'a.txt').read_text() == 'x' * 5000, (loc / 'a.txt').size())\n")
    faults = [Fault(("PUT", "POST"), 503, "SlowDown", times=4),
              Fault(("GET", "HEAD"), 503, "SlowDown", times=3),
              Fault(("PUT",), 500, "InternalError", times=2)]
    with FaultProxy(s3, faults) as proxy:
        proc = subprocess.run([sys.executable, "-c", code, f"s3://{bucket}/t"],
                              env=with_env(proxy), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["True", "5000"], proc.stdout + proc.stderr[-2000:]
        statuses = [st for _, _, st in proxy.served]
        assert statuses.count(503) >= 7 and statuses.count(500) == 2, proxy.served
    with FaultProxy(s3, [Fault(("PUT", "POST"), 503, "SlowDown", times=None)]) as proxy:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", code, f"s3://{bucket}/u"],
                              env=with_env(proxy), capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "SLOW_DOWN" in proc.stderr, proc.stderr[-3000:]
        assert time.time() - t0 < 120


@pytest.mark.parametrize("option", ["--storage", "--cache"])
def test_a_bucket_that_refuses_writes_fails_before_ray_starts(option: str, s3: S3Server,
                                                              tmp_path: Path) -> None:
    ok, refusing = s3.bucket("ok"), s3.bucket("ro")
    where = {"--storage": f"s3://{ok}/runs", "--cache": f"s3://{ok}/cache"}
    where[option] = f"s3://{refusing}/raygenre"
    with FaultProxy(s3, [Fault(WRITES, 403, "AccessDenied", prefix=f"/{refusing}",
                               times=None)]) as proxy:
        env = {**with_env(proxy), "RAYGENRE_CACHE": str(tmp_path / "cache")}
        proc = subprocess.run(
            [sys.executable, "-m", "raygenre.grid", "batch_epoch", "--smoke", "--results",
             str(tmp_path / "r"), "--storage", where["--storage"], "--cache",
             where["--cache"]], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300)
        assert proxy.served, "the proxy refused nothing"
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr
    assert f"{option} {where[option]}" in err and f"bucket {refusing!r}" in err, err
    assert "ACCESS_DENIED" in err or "Access Denied" in err, err
    assert "[ray]" not in proc.stdout and "[tune" not in proc.stdout, proc.stdout
    assert not (tmp_path / "cache" / "prepared").exists()  # not even the data was prepared
    assert s3.keys(refusing) == []


# --- sweeps (slow) ----------------------------------------------------------------------------

def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 900
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raygenre.grid", *args], cwd=cwd,
                          env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
                          timeout=timeout)


def _sweep_args(grid: Path, bucket: str, prefix: str, data: str, results: Path) -> list[str]:
    return [str(grid), "--smoke", "--preset", "cpu", "--storage", f"s3://{bucket}/{prefix}/runs",
            "--cache", f"s3://{bucket}/{prefix}/cache", "--data", data, "--results",
            str(results)]


def _history(results: Path) -> dict[tuple, dict[str, str]]:
    return history_by_config(results / "s3grid-smoke" / "history.csv")


@pytest.fixture(scope="module")
def s3_sweep(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One bucket holding the data, and an uninterrupted sweep with its run folder, cache and
    data all in it: the reference the other sweeps must equal."""
    base = tmp_path_factory.mktemp("s3sweep")
    bucket = s3.bucket()
    data = _upload_genres(s3, bucket, base / "genres")
    grid = base / "s3grid.yaml"
    grid.write_text(GRID)
    local = base / "local-ref"
    env = {**with_env(s3), "RAYGENRE_CACHE": str(local)}
    t0 = time.time()
    proc = _cli(_sweep_args(grid, bucket, "ref", data, base / "r-ref"), env, base)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return {"base": base, "bucket": bucket, "data": data, "grid": grid, "local": local,
            "proc": proc, "history": _history(base / "r-ref"), "wall": time.time() - t0}


@pytest.mark.slow
def test_sweep_keeps_runs_and_prepared_data_in_the_bucket(s3: S3Server, s3_sweep: dict) -> None:
    out, bucket = s3_sweep["proc"].stdout, s3_sweep["bucket"]
    assert "[data] fetching s3://" in out and "[data] prepared data shared at s3://" in out, out
    history = s3_sweep["history"]
    assert len(history) == 6, history  # 2 trials x (1 + 2) cell epochs
    keys = s3.keys(bucket, "ref/")
    prepared = {k.rsplit("/", 1)[1] for k in keys if k.startswith("ref/cache/prepared/")}
    assert prepared >= set(PREPARED_FILES), keys
    run = [k for k in keys if k.startswith("ref/runs/s3grid-smoke/")]
    assert any(k.endswith("/tuner.pkl") for k in run), run
    assert sum(k.endswith("/state.pt") for k in run) >= 2, run  # each trial's checkpoint
    # The plan line's size of a checkpoint is what one weighs in the bucket (within the few KB
    # of meta.json). Both trials train the same model: one size is stated.
    stated = re.search(r"\[grid\] checkpoints to the bucket: ([\d.]+) (KB|MB) per trial per "
                       r"epoch, ~[\d.]+ (KB|MB|GB) in all \(4 epochs over 2 trial\(s\)", out)
    assert stated, out
    size = float(stated.group(1)) * {"KB": 1e3, "MB": 1e6}[stated.group(2)]
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="ref/runs/s3grid-smoke/")
    folders: dict[str, int] = {}
    for o in listed["Contents"]:
        if "/checkpoint_" in o["Key"]:
            folder = o["Key"].rsplit("/", 1)[0]
            folders[folder] = folders.get(folder, 0) + o["Size"]
    assert folders and all(abs(n - size) < 0.05 * size for n in folders.values()), (size,
                                                                                   folders)


@pytest.mark.slow
def test_killed_sweep_resumes_from_the_bucket_on_a_fresh_cache(s3: S3Server, s3_sweep: dict,
                                                               tmp_path: Path) -> None:
    """The driver and its Ray are killed after the first epoch, the machine's cache is lost,
    and `--resume` on an empty cache (another machine) ends with the reference's numbers. Every
    write to the bucket meanwhile is answered 503 SlowDown twice before it goes through.

    The killed run starts on a machine that prepared the data already (the reference's cache,
    copied): the prepared set must still reach the bucket, or the resume would prepare it
    again."""
    bucket = s3_sweep["bucket"]
    local_a, local_b = tmp_path / "local-a", tmp_path / "local-b"
    shutil.copytree(s3_sweep["local"], local_a)  # (copy2: file times kept, so the same key)
    args = _sweep_args(s3_sweep["grid"], bucket, "kill", s3_sweep["data"], tmp_path / "r")
    with FaultProxy(s3, [Fault(("PUT", "POST"), 503, "SlowDown", prefix=f"/{bucket}/kill/",
                               times=2)]) as proxy:
        env = {**with_env(proxy), "RAYGENRE_CACHE": str(local_a), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "raygenre.grid", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            lines = _read_until(proc, " epoch 1/2")
        finally:
            kill_tree(proc.pid)
            proc.wait(timeout=30)
        log = "".join(lines)
        assert "[data] reusing prepared data" in log, log
        assert "[data] prepared data shared at s3://" in log, log
        assert "completed" not in log, log  # killed mid-sweep, not after it
        shutil.rmtree(local_a)

        env["RAYGENRE_CACHE"] = str(local_b)
        resumed = _cli([*args, "--resume"], env, tmp_path)
        assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-3000:]
        served = list(proxy.served)
    out = resumed.stdout
    assert "[grid] resuming s3://" in out, out
    assert "[data] fetched prepared data" in out and "[data] preparing" not in out, out
    # Throttled writes from the trials (checkpoints) and the driver (Tune's state) were retried.
    assert any("/checkpoint_" in path for _, path, _ in served), served
    assert any("/experiment_state" in path or "tuner.pkl" in path for _, path, _ in served)
    got, ref = _history(tmp_path / "r"), s3_sweep["history"]
    assert got.keys() == ref.keys(), (sorted(got.keys() - ref.keys()),
                                      sorted(ref.keys() - got.keys()))
    for key in ref:
        assert got[key] == ref[key], key
    with open(tmp_path / "r" / "s3grid-smoke" / "cells.csv") as f:
        assert all(c["status"] == "completed" for c in csv.DictReader(f))



@pytest.mark.parametrize("kw", [{}, {"optimizer": "sgd", "momentum": 0.9, "ema": 0.9},
                                {"optimizer": "sgd", "momentum": 0.0}])
def test_the_checkpoint_size_the_plan_line_states_is_what_a_checkpoint_weighs(
        kw: dict, tmp_path: Path) -> None:
    """`checkpoint_bytes` (what the plan line multiplies out) against the files the loop
    writes, for Adam's two moments, SGD's momentum buffer with a weight average, plain SGD."""
    import torch

    from raygenre.training.builder import Runtime
    from raygenre.training.checkpoints import PREDICTIONS_FILE, STATE_FILE, checkpoint_bytes
    from raygenre.training.loop import LocalSeam, train_loop

    g = torch.Generator().manual_seed(0)
    data = {s: (torch.randn(n, 2048, generator=g), torch.randint(0, 3, (n,), generator=g))
            for s, n in (("train", 16), ("val", 24))}
    cfg = Config(model="mlp", features="waveform", hidden=(256,), batch_size=8, epochs=2, **kw)
    seam = LocalSeam(data, tmp_path)
    train_loop(cfg, Runtime(num_classes=3, segment_samples=2048, threads=1), seam)
    for epoch in (1, 2):
        folder = tmp_path / f"epoch_{epoch:04d}"
        written = sum((folder / f).stat().st_size for f in (STATE_FILE, PREDICTIONS_FILE))
        estimate = checkpoint_bytes(cfg, 2048, 3, 24, epoch)
        assert abs(estimate - written) < 0.01 * written, (epoch, estimate, written)


@pytest.mark.parametrize("features", sorted(FEATURES))
def test_checkpoint_size_is_priced_for_every_feature(features: str) -> None:
    """The plan line prices a checkpoint for every feature in the registry (a mel filterbank
    built on the meta device failed on logmel: the music_search grid could not start)."""
    from raygenre.training.checkpoints import checkpoint_bytes

    model = "mlp" if features == "waveform" else "small_cnn"
    cfg = Config(model=model, features=features, hidden=(16,))
    assert checkpoint_bytes(cfg, 22_050, 4, 10, 1) > 4 * 10 * 4
