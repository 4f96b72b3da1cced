"""Malformed input files for ``dmc complete`` (issue 13): exit status 2 and exactly one
``dmc: error:`` line on stderr, whatever is wrong with the file.

Run in-process through :func:`dmc.cli.main` (no interpreter start per case),
so the whole table takes about a second.  Every case fails while reading or
validating, before any fitting.
"""

import gzip
import zipfile

import numpy as np
import pytest

from dmc.cli import main

MM = "%%MatrixMarket matrix coordinate real general\n"

TEXT_CASES = {
    # Matrix Market: truncated, malformed, out of range
    "empty.mtx": "",
    "header_only.mtx": MM,
    "no_banner.mtx": "hello world\n1 2 3\n",
    "bad_object.mtx": "%%MatrixMarket tensor coordinate real general\n3 3 1\n1 1 1.0\n",
    "truncated.mtx": MM + "3 3 3\n1 1 1.0\n2 2 2.0\n",
    "truncated_array.mtx": "%%MatrixMarket matrix array real general\n3 3\n1.0\n2.0\n",
    "too_many_lines.mtx": MM + "3 3 1\n1 1 1.0\n2 2 2.0\n3 3 3.0\n",
    "text_value.mtx": MM + "3 3 2\n1 1 1.0\n2 2 abc\n",
    "text_size.mtx": MM + "three 3 2\n1 1 1.0\n2 2 2.0\n",
    "missing_value.mtx": MM + "3 3 2\n1 1\n2 2 2.0\n",
    "float_index.mtx": MM + "3 3 2\n1.5 1 1.0\n2 2 2.0\n",
    "zero_index.mtx": MM + "3 3 2\n0 1 1.0\n2 2 2.0\n",
    "negative_index.mtx": MM + "3 3 2\n-1 1 1.0\n2 2 2.0\n",
    "index_outside.mtx": MM + "3 3 2\n1 1 1.0\n5 5 2.0\n",
    "negative_count.mtx": MM + "3 3 -2\n1 1 1.0\n",
    "negative_size.mtx": MM + "-3 3 1\n1 1 1.0\n",
    "count_past_int64.mtx": MM + "3 3 99999999999999999999\n1 1 1.0\n",
    "count_past_file.mtx": MM + "3 3 1000000000000\n1 1 1.0\n",
    "array_past_file.mtx": "%%MatrixMarket matrix array real general\n100000 100000\n1.0\n",
    "size_past_memory.mtx": MM + "100000000000 100000000000 2\n1 1 1.0\n2 2 1.0\n",
    "zero_size.mtx": MM + "0 0 0\n",
    "no_entries.mtx": MM + "3 3 0\n",
    "nan_value.mtx": MM + "3 3 2\n1 1 nan\n2 2 2.0\n",
    "overflowing_value.mtx": MM + "3 3 2\n1 1 1e400\n2 2 2.0\n",
    "duplicate.mtx": MM + "3 3 2\n1 1 1.0\n1 1 2.0\n",
    "pattern.mtx": "%%MatrixMarket matrix coordinate pattern general\n3 3 2\n1 1\n2 2\n",
    "complex.mtx": "%%MatrixMarket matrix coordinate complex general\n2 2 1\n1 1 1.0 2.0\n",
    # CSV triplets: text, negative or huge indices, empty, wrong shapes
    "empty.csv": "",
    "blank_lines.csv": "\n\n\n",
    "comment_only.csv": "# only a comment\n",
    "header_only.csv": "row,col,value\n",
    "text_value.csv": "0,0,1.0\n1,1,abc\n",
    "text_index.csv": "0,0,1.0\nx,1,2.0\n",
    "quoted.csv": '"0","0","1.0"\n"1","1","2.0"\n',
    "negative_index.csv": "0,0,1.0\n-1,1,2.0\n",
    "float_index.csv": "0,0,1.0\n1.5,1,2.0\n",
    "huge_index.csv": "0,0,1.0\n1e30,1,2.0\n",
    "index_past_memory.csv": "0,0,1.0\n99999999999,99999999999,2.0\n",
    "nan_index.csv": "0,0,1.0\nnan,1,2.0\n",
    "ragged.csv": "0,0,1.0\n1,1\n",
    "two_columns.csv": "0,0\n1,1\n",
    "four_columns.csv": "0,0,1,2\n1,1,2,3\n",
    "trailing_comma.csv": "0,0,1.0,\n1,1,2.0,\n",
    "semicolons.csv": "0;0;1.0\n1;1;2.0\n",
    "duplicate.csv": "0,0,1.0\n0,0,2.0\n",
    "nan_value.csv": "0,0,nan\n1,1,2.0\n",
    "inf_value.csv": "0,0,inf\n1,1,2.0\n",
    "one_entry.csv": "0,0,1.0\n",  # a 1 x 1 matrix: too small for any rank
    "tabs_then_commas.tsv": "0\t0\t1.0\n1,1,2.0\n",
    "no_extension": "0,0,1.0\n",
    "unknown.json": "{}",
}

BINARY_CASES = {
    "garbage.mtx": bytes(range(256)),
    "garbage.csv": bytes(range(128, 256)) * 2,
    "empty.npy": b"",
    "garbage.npy": b"\x00\x01garbage" * 4,
    "empty.npz": b"",
    "gzip_truncated.mtx.gz": gzip.compress((MM + "3 3 2\n1 1 1.0\n2 2 2.0\n").encode())[:20],
    "gzip_garbage.mtx.gz": b"\x1f\x8b" + bytes(range(40)),
}


def _npy_cases(folder):
    np.save(folder / "one_d.npy", np.arange(5.0))
    np.save(folder / "three_d.npy", np.zeros((2, 2, 2)))
    np.save(folder / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(folder / "objects.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    np.save(folder / "complex.npy", np.ones((3, 3), complex))
    np.save(folder / "no_rows.npy", np.zeros((0, 3)))
    np.save(folder / "all_nan.npy", np.full((3, 3), np.nan))
    np.save(folder / "one_row.npy", np.ones((1, 5)))  # too small for any rank
    whole = (folder / "one_d.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(whole[:-8])
    np.savez(folder / "mask_shape.npz", M=np.ones((3, 3)), mask=np.ones((2, 2), bool))
    np.savez(folder / "text_mask.npz", M=np.ones((3, 3)), mask=np.full((3, 3), "a"))
    np.savez(folder / "two_arrays.npz", a=np.ones(3), b=np.ones(3))
    np.savez(folder / "no_arrays.npz")
    archive = (folder / "two_arrays.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(archive[: len(archive) // 2])
    with zipfile.ZipFile(folder / "not_numpy.npz", "w") as z:
        z.writestr("M.npy", b"not an array")
    return ["one_d.npy", "three_d.npy", "strings.npy", "objects.npy", "complex.npy", "no_rows.npy",
            "all_nan.npy", "one_row.npy", "truncated.npy", "mask_shape.npz", "text_mask.npz",
            "two_arrays.npz", "no_arrays.npz", "truncated.npz", "not_numpy.npz"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    for name, text in TEXT_CASES.items():
        (folder / name).write_text(text)
    for name, data in BINARY_CASES.items():
        (folder / name).write_bytes(data)
    names = list(TEXT_CASES) + list(BINARY_CASES) + _npy_cases(folder)
    (folder / "good.csv").write_text("".join(f"{i},{j},{(i + 1) * (j + 1)}\n"
                                             for i in range(6) for j in range(6) if (i + j) % 3))
    return folder, names


def _assert_one_line_error(capsys, argv):
    status = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (argv, status, err)
    assert len(lines) == 1 and lines[0].startswith("dmc: error: "), (argv, err)
    assert "Traceback" not in err and out == "", (argv, out, err)
    return lines[0]


def test_every_malformed_input_is_one_line_and_exit_2(cases, capsys, tmp_path):
    folder, names = cases
    assert len(names) == len(set(names)) > 70
    output = tmp_path / "out.csv"
    for name in names:
        _assert_one_line_error(capsys, ["complete", str(folder / name), "-o", str(output),
                                        "--max-iter", "5"])
        assert not output.exists(), name


@pytest.mark.parametrize("name, expected", [
    ("truncated.mtx", "truncated"), ("count_past_file.mtx", "declares 1000000000000 entries"),
    ("size_past_memory.mtx", "too large for memory"), ("gzip_truncated.mtx.gz", "not a readable"),
    ("huge_index.csv", "line 2: row and column indices must be integers"),
    ("index_past_memory.csv", "too large for memory"), ("truncated.npz", "not a readable .npz"),
    ("negative_index.csv", "line 2: indices start at 0"), ("text_value.csv", "'abc' is not a number"),
])
def test_malformed_inputs_name_the_problem(cases, capsys, tmp_path, name, expected):
    # each was an uncaught exception (EOFError, BadZipFile, OverflowError), an exit 1
    # "out of memory" or a RuntimeWarning line before the error, before issue 13
    folder, _ = cases
    line = _assert_one_line_error(capsys, ["complete", str(folder / name), "-o",
                                           str(tmp_path / "out.csv")])
    assert expected in line, line


def test_wrong_shapes_and_bad_pairs(cases, capsys, tmp_path):
    folder, _ = cases
    good, output = str(folder / "good.csv"), str(tmp_path / "out.csv")
    for shape in (["1", "1"], ["3", "6"], ["0", "6"], ["-1", "6"]):
        _assert_one_line_error(capsys, ["complete", good, "-o", output, "--shape", *shape])
    _assert_one_line_error(capsys, ["complete", str(folder / "one_d.npy"), "-o", output,
                                    "--shape", "6", "6"])
    pairs = {"text.csv": "0,1\nx,2\n", "negative.csv": "0,1\n-2,2\n", "outside.csv": "0,1\n9,2\n",
             "empty.csv": "", "ragged.csv": "0,1\n2\n", "float.csv": "0.5,1\n"}
    for name, text in pairs.items():
        (tmp_path / name).write_text(text)
    np.save(tmp_path / "float.npy", np.array([[0.5, 1.0]]))
    np.save(tmp_path / "flat.npy", np.arange(4))
    for name in [*pairs, "float.npy", "flat.npy", "garbage.npy"]:
        path = tmp_path / name if (tmp_path / name).exists() else folder / name
        _assert_one_line_error(capsys, ["complete", good, "-o", output, "--pairs", str(path)])
