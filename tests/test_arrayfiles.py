"""Trust, round three: every array the tool reads from a file (a dataset, weights, a checkpoint,
an input to score) goes through mlptrain.arrayfiles, which reads each header before any data.

A header that lies, an array of the wrong kind, a pipe for a file: each reader raises the
project's own error naming the file and the array, never a MemoryError or another traceback,
and never loads a wrong value without a word. The fuzz tests at the end feed the readers bytes
and headers that hypothesis makes up."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlptrain import arrayfiles
from mlptrain.arrayfiles import Expect, read_npy, read_npz
from mlptrain.data.npz import load_npz
from mlptrain.errors import DataError, MlptrainError, RunStoreError
from mlptrain.runs import Run, RunStore, npz_bytes
from mlptrain.runs.checkpoint import epoch_end

TERABYTES = (10**12,)  # 8 TB of float64: a header that claims it must never be allocated


def npy(shape, descr="<f8", data: bytes = b"", fortran: bool = False, version=(1, 0)) -> bytes:
    """One .npy file whose header says whatever the test wants, followed by `data`."""
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(out, header)
    else:
        np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue() + data


def zipped(entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def lying(key: str = "X") -> bytes:
    """An archive whose entry claims 10**12 float64 values and holds 16 bytes."""
    return zipped({f"{key}.npy": npy(TERABYTES, data=b"\0" * 16)})


# -- headers that lie ------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_header_that_claims_terabytes_is_refused_before_anything_is_allocated(
        tmp_path, compression):
    path = tmp_path / "data.npz"
    path.write_bytes(zipped({"X.npy": npy(TERABYTES, data=b"\0" * 16),
                             "y.npy": npy((2,), "<i8", b"\0" * 16)}, compression))
    with pytest.raises(DataError) as caught:
        load_npz(path)
    message = str(caught.value)
    assert str(path) in message and "'X'" in message and "claims shape (1000000000000,)" in \
        message and "7.3 TiB" in message


def test_run_files_whose_headers_lie_are_run_store_errors(tmp_path):
    run = RunStore(tmp_path).create("lies")
    (run.path / "weights.npz").write_bytes(lying("layers.0.weight"))
    (run.path / "checkpoint.npz").write_bytes(lying("model.layers.0.weight"))
    with pytest.raises(RunStoreError, match=r"weights\.npz: array 'layers\.0\.weight' claims"):
        run.read_weights()
    with pytest.raises(RunStoreError, match=r"checkpoint\.npz: array 'model\.layers.*claims"):
        run.read_checkpoint()
    with pytest.raises(RunStoreError, match="claims"):
        epoch_end(run.path / "checkpoint.npz")


def test_an_idx_header_whose_sizes_overflow_int64_is_refused(tmp_path):
    from mlptrain.data.idx import read_idx

    path = tmp_path / "train-images-idx3-ubyte"  # 65536**4 bytes announced: 2**64, 0 in int64
    path.write_bytes(bytes([0, 0, 8, 4]) + (65536).to_bytes(4, "big") * 4)
    with pytest.raises(DataError, match="announcing shape .65536, 65536, 65536, 65536., i.e. "
                                        "18446744073709551616 data bytes, but its data is 0"):
        read_idx(path)


def test_a_lying_npy_input_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(npy(TERABYTES, data=b"\0" * 16))
    with pytest.raises(DataError, match=r"x\.npy claims shape \(1000000000000,\)"):
        read_npy(path, f"input {path}")


def test_arrays_that_do_not_fit_the_memory_available_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez(path, X=np.zeros((100, 10)), y=np.zeros(100))
    monkeypatch.setattr(arrayfiles, "host_available", lambda: 1000)
    with pytest.raises(DataError, match=r"holds 8\.6 KiB of arrays \(the largest, X, .*1000 B "
                                         "of memory available"):
        load_npz(path)


def test_a_weights_file_is_checked_against_the_network_before_its_data_is_read(tmp_path):
    from mlptrain.errors import ModelError

    path = tmp_path / "w.npz"
    path.write_bytes(lying("layers.0.weight"))
    expect = Expect(shapes={"layers.0.weight": (8, 2)}, shapes_of="the 2-8-1 network",
                    shape_error=ModelError)
    with pytest.raises(ModelError, match=r"has shape \(1000000000000,\), expected \(8, 2\) for "
                                         "the 2-8-1 network"):
        read_npz(path, "weights", DataError, expect)


# -- arrays of the wrong kind ----------------------------------------------------------------------


WRONG_KINDS = {
    "complex": (np.ones(4) + 1j, "is complex (complex128: the imaginary part would be lost)"),
    "text": (np.array(["0.5"] * 4), "is text (<U3)"),
    "object": (np.array([1, "a", None, 2.0], dtype=object), "is an object array"),
    "structured": (np.zeros(4, dtype=[("a", "<f8")]), "is a structured array"),
    "dates": (np.zeros(4, dtype="datetime64[s]"), "is of dtype datetime64[s]"),
}


@pytest.mark.parametrize("kind", WRONG_KINDS)
def test_arrays_of_the_wrong_kind_are_refused_by_name(tmp_path, kind):
    array, found = WRONG_KINDS[kind]
    path = tmp_path / "data.npz"
    np.savez(path, X=array, y=np.zeros(4))  # (y may hold names: text is classes there)
    with pytest.raises(DataError) as caught:
        load_npz(path)
    assert f"{path}: array 'X' {found}" in str(caught.value)
    assert "expected numbers" in str(caught.value)


def test_a_zip_named_npy_and_an_npy_named_npz_say_what_they_are(tmp_path):
    as_npy = tmp_path / "x.npy"
    np.savez(tmp_path / "x.npz", X=np.ones(3))
    (tmp_path / "x.npz").rename(as_npy)
    with pytest.raises(DataError, match="is a zip archive .an .npz., not a single .npy array"):
        read_npy(as_npy, str(as_npy))
    as_npz = tmp_path / "y.npz"
    np.save(tmp_path / "y.npy", np.ones(3))
    (tmp_path / "y.npy").rename(as_npz)
    with pytest.raises(DataError, match="it is a single .npy array, not a .npz archive"):
        read_npz(as_npz, str(as_npz))


def test_nan_in_a_run_file_names_the_file_and_the_array(tmp_path):
    run = RunStore(tmp_path).create("nan")
    run.write_weights({"layers.0.weight": np.array([[0.0, np.nan]]), "layers.0.bias": np.ones(1)})
    with pytest.raises(RunStoreError, match=r"weights\.npz: array 'layers\.0\.weight' holds 1 "
                                            r"NaN or infinite value\(s\), the first at index "
                                            r"\(0, 1\)"):
        run.read_weights()


def test_a_checkpoint_reads_back_its_json_texts_and_its_infinite_best(tmp_path):
    run = RunStore(tmp_path).create("ck")
    run.write_checkpoint({"rng.split": np.array('{"a": 1}'), "history": np.array("[]"),
                          "best.val_loss": np.array(np.inf), "epoch": np.array(0),
                          "position": np.array(0)})
    back = run.read_checkpoint()
    assert str(back["rng.split"]) == '{"a": 1}' and np.isinf(back["best.val_loss"])
    assert epoch_end(run.path / "checkpoint.npz") == 0
    run.write_checkpoint({"model.layers.0.weight": np.array(["1.5"]), "epoch": np.array(0)})
    with pytest.raises(RunStoreError, match="'model.layers.0.weight' is text"):
        run.read_checkpoint()


def test_a_fortran_ordered_and_a_compressed_array_read_back_equal(tmp_path):
    X = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    np.savez_compressed(tmp_path / "f.npz", X=X, y=np.arange(3, dtype=">i4"))
    back = read_npz(tmp_path / "f.npz", "f")
    np.testing.assert_array_equal(back["X"], X)
    np.testing.assert_array_equal(back["y"], np.arange(3))


# -- pipes -----------------------------------------------------------------------------------------


def test_a_pipe_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(DataError, match="is not a regular file .a pipe, a device or a folder."):
        load_npz(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_npy(fifo, str(fifo))


# -- fuzz: whatever the bytes, a reader loads them or raises the project's error -------------------


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _only_project_errors(folder: Path, data: bytes) -> None:
    """Every way the tool reads a .npz, on `data`: a dataset, a run's weights (as a network
    of known shapes reads them) and checkpoint, a sweep's look at a checkpoint, an input."""
    for name in ("data.npz", "weights.npz", "checkpoint.npz", "input.npy"):
        (folder / name).write_bytes(data)
    run = Run(folder)
    shapes = Expect(shapes={"X": (4, 3), "layers.0.weight": (2, 2)}, shapes_of="a network")
    for read in (lambda: load_npz(folder / "data.npz"), lambda: run.read_weights(shapes),
                 run.read_checkpoint, lambda: epoch_end(folder / "checkpoint.npz"),
                 lambda: read_npy(folder / "input.npy", "input")):
        try:
            read()
        except MlptrainError:
            pass


ARCHIVE = {"X": np.arange(12.0).reshape(4, 3), "y": np.array([0, 1, 0, 1]),
           "epoch": np.array(1), "position": np.array(0), "history": np.array("[]")}
VALID = npz_bytes(ARCHIVE)  # as a run writes it: stored
_compressed = io.BytesIO()
np.savez_compressed(_compressed, **ARCHIVE)
VALID_DEFLATED = _compressed.getvalue()  # as numpy.savez_compressed writes it


@FUZZ
@given(data=st.binary(max_size=600))
def test_fuzz_random_bytes(tmp_path, data):
    _only_project_errors(tmp_path, data)


@FUZZ
@given(valid=st.sampled_from([VALID, VALID_DEFLATED]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8),
       keep=st.floats(0, 1))
def test_fuzz_a_valid_archive_with_bytes_changed_and_cut(tmp_path, valid, edits, keep):
    data = bytearray(valid)
    for where, value in edits:
        data[int(where * len(data))] = value
    _only_project_errors(tmp_path, bytes(data[:round(keep * len(data))]))


DESCRS = st.sampled_from(["<f8", "<f4", ">f8", "<i8", "|u1", "|b1", "<c16", "|O", "<U3",
                          "|S2", "<M8[s]", "|V4", "<f16", "[('a', '<f8')]", "garbage", "<f8 "])


@FUZZ
@given(shape=st.lists(st.integers(-3, 2**40) | st.integers(0, 5), max_size=3),
       descr=DESCRS, fortran=st.booleans(), data=st.binary(max_size=200),
       version=st.sampled_from([(1, 0), (2, 0)]), key=st.sampled_from(["X", "y", "epoch"]))
def test_fuzz_headers_that_say_anything(tmp_path, shape, descr, fortran, data, version, key):
    descr_value = eval(descr) if descr.startswith("[") else descr  # noqa: S307 - a literal
    try:
        entry = npy(shape, descr_value, data, fortran, version)
    except (ValueError, TypeError):  # numpy will not even write this header
        return
    others = {"y.npy": npy((4,), "<i8", b"\0" * 32)} if key == "X" else {}
    _only_project_errors(tmp_path, zipped({f"{key}.npy": entry, **others}))


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_,
                           np.complex128, np.dtype("<U2"), np.dtype("datetime64[s]")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))


@FUZZ
@given(X=ARRAYS, y=ARRAYS)
def test_fuzz_dataset_arrays_load_or_raise_a_data_error(tmp_path, X, y):
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=y)
    try:
        data = load_npz(path)
    except DataError:
        return
    assert np.isfinite(data.X).all() and data.X.dtype == np.float64
    assert data.y.dtype == np.int64 and (data.y >= 0).all() and len(data.y) == len(data.X)
