"""Data files: round trips, and a clear error naming the file for each way a file can be bad."""

import os
import subprocess
import sys

import numpy as np
import pytest

from src import datafiles
from src.errors import DataFileError
from tests.conftest import ROOT


def test_xy_round_trip_is_exact(tmp_path):
    x = np.linspace(-1, 1, 7)
    y = np.random.default_rng(0).random(7) / 3
    datafiles.write_xy(tmp_path / "d.csv", x, y)
    x2, y2 = datafiles.read_xy(tmp_path / "d.csv")
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    assert [p.name for p in tmp_path.iterdir()] == ["d.csv"], "a temporary file was left behind"


@pytest.mark.parametrize(
    "content,says",
    [
        (None, "file not found"),
        ("", "the file is empty"),
        ("x,y\n", "expected 2 columns and at least 2 rows"),
        ("x,y\n1.0,2.0\n", "expected 2 columns and at least 2 rows"),
        ("x,y\n1.0,2.0\n3.0", "not a readable CSV"),  # truncated mid-row
        ("x,y,z\n1,2,3\n4,5,6\n", "expected the header 'x,y'"),
        ("x,y\n1,2,3\n4,5,6\n", "expected 2 columns"),
        ("x,y\n1,2\nnot,a number\n", "not a readable CSV"),
        ("x,y\n1,2\n3,nan\n", "non-finite value (NaN or inf) in data row 2"),
        ("x,y\n1,inf\n3,4\n", "non-finite value (NaN or inf) in data row 1"),
    ],
)
def test_bad_csv_is_named(tmp_path, content, says):
    path = tmp_path / "train.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataFileError) as error:
        datafiles.read_xy(path)
    assert str(error.value).startswith(str(path))
    assert says in str(error.value)


def test_binary_garbage_is_named(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(DataFileError, match="train.csv"):
        datafiles.read_xy(path)


@pytest.mark.parametrize(
    "content,says",
    [
        (None, "file not found"),
        ("{oops", "not valid JSON"),
        ('{"w0": 1}', "missing b0"),
        ("[1, 2]", "missing w0, b0"),
        ('{"w0": "one", "b0": 0}', "w0 must be a finite number, found 'one'"),
        ('{"w0": 1, "b0": NaN}', "b0 must be a finite number, found nan"),
        ('{"w0": true, "b0": 0}', "w0 must be a finite number, found True"),
    ],
)
def test_bad_json_is_named(tmp_path, content, says):
    path = tmp_path / "start.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataFileError) as error:
        datafiles.read_json(path, numbers=("w0", "b0"))
    assert str(path) in str(error.value) and says in str(error.value)


def test_good_json_reads(tmp_path):
    path = tmp_path / "start.json"
    datafiles.write_json(path, {"w0": 0.25, "b0": -1, "run_id": "abc"})
    assert datafiles.read_json(path, keys=("run_id",), numbers=("w0", "b0")) == {"w0": 0.25, "b0": -1, "run_id": "abc"}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    datafiles.write_json(path, {"ok": 1})
    with pytest.raises(RuntimeError):
        with datafiles.atomic_path(path) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("interrupted")
    assert path.read_text() == '{\n  "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_train_stage_reports_a_bad_data_file_in_one_line(tmp_path):
    (tmp_path / "train.csv").write_text("x,y\n1,2\n3,nan\n")
    (tmp_path / "test.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp_path / "start.json").write_text('{"w0": 0, "b0": 0}')
    args = ["--params", str(ROOT / "params.yaml"), "--train", "train.csv", "--test", "test.csv"]
    args += ["--start", "start.json", "--out", "m"]
    done = subprocess.run(
        [sys.executable, "-m", "src.stages.train", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: train.csv: non-finite value (NaN or inf) in data row 2"
    assert not (tmp_path / "m").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        datafiles.write_text(tmp_path / "a.txt", "x")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives, the reference
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode == (tmp_path / "plain.txt").stat().st_mode & 0o777
