"""expand_paths: folders, globs, stdin; one entry per record, deterministic, deduplicated."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from io_helpers import CHAPMAN_MAT, CINC, PTBXL, chmod_is_effective, shared_data

from ecgtext.errors import FormatError, MissingFileError
from ecgtext.io import expand_paths
from ecgtext.io.paths import detect_format


@pytest.fixture
def tree(tmp_path):
    """A folder as users have them: WFDB pairs, a CinC .hea+.mat, plain files, clutter."""
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for ext in ("hea", "dat"):
        shutil.copy(PTBXL / f"00001_hr.{ext}", tmp_path / f"00001_hr.{ext}")
        shutil.copy(PTBXL / f"00002_hr.{ext}", tmp_path / "b" / f"00002_hr.{ext}")
    for ext in ("hea", "mat"):
        shutil.copy(CINC / f"E07500.{ext}", tmp_path / "b" / "deep" / f"E07500.{ext}")
    shutil.copy(CHAPMAN_MAT, tmp_path / "chapman.mat")
    np.save(tmp_path / "a.npy", np.zeros((12, 10)))
    (tmp_path / "leads.csv").write_text("I,II\n0.1,0.2\n")
    (tmp_path / "ptbxl_database.csv").write_text("ecg_id,patient_id,report\n1,2,normal\n")
    (tmp_path / "README.txt").write_text("not an ECG")
    (tmp_path / ".hidden.npy").write_bytes(b"")
    (tmp_path / "00001_hr.atr").write_bytes(b"\x00")  # an annotation file of record 00001_hr
    return tmp_path


def test_folder_yields_one_entry_per_record_sorted(tree):
    got = expand_paths([str(tree)])
    rel = [p[len(str(tree)) + 1:] for p in got]
    assert rel == ["00001_hr.hea", "a.npy", "chapman.mat", "leads.csv",
                   "b/00002_hr.hea", "b/deep/E07500.hea"]
    assert expand_paths([str(tree)]) == got  # deterministic


def test_globs_names_and_duplicates(tree):
    t = str(tree)
    got = expand_paths([f"{t}/00001_hr.dat", f"{t}/00001_hr", f"{t}/00001_hr.hea", f"{t}/*.npy",
                        f"{t}/**/*.hea", f"{t}/missing.hea", f"{t}/nomatch*.csv"])
    assert got == [f"{t}/00001_hr.hea", f"{t}/a.npy", f"{t}/b/00002_hr.hea",
                   f"{t}/b/deep/E07500.hea", f"{t}/missing.hea", f"{t}/nomatch*.csv"]


def test_stdin_lists_paths(tree):
    t = str(tree)
    stdin = io.StringIO(f"# records\n{t}/chapman.mat\n\n{t}/b\n{t}/chapman.mat\n")
    assert expand_paths(["-", f"{t}/a.npy"], stdin=stdin) == \
        [f"{t}/chapman.mat", f"{t}/b/00002_hr.hea", f"{t}/b/deep/E07500.hea", f"{t}/a.npy"]


def test_container_keys_pass_through():
    assert expand_paths(["exams.hdf5::12"]) == ["exams.hdf5::12"]


def test_detect_format(tree):
    assert detect_format(str(tree / "00001_hr.hea")) == "wfdb"
    assert detect_format(str(tree / "00001_hr")) == "wfdb"
    assert detect_format(str(tree / "b" / "deep" / "E07500.mat")) == "wfdb"
    assert detect_format(str(tree / "chapman.mat")) == "mat"
    assert detect_format(str(tree / "a.npy")) == "npy"
    with pytest.raises(FormatError, match="unknown extension .txt"):
        detect_format(str(tree / "README.txt"))
    assert detect_format(str(tree / "README.txt"), "csv") == "csv"
    with pytest.raises(MissingFileError, match="no such file"):
        detect_format(str(tree / "nope.hea"))
    with pytest.raises(FormatError, match="folder"):
        detect_format(str(tree / "b"))


@pytest.mark.shared
def test_shared_ptbxl_folder_expands_to_its_records():
    root = shared_data() / "ptbxl"
    got = expand_paths([str(root)])
    assert len(got) == 450 and all(p.endswith(".hea") for p in got)  # metadata CSVs are skipped


# ---- failures reported, links followed once, duplicates by real path -------------------------

def test_unreadable_folder_is_a_failure_not_skipped(tree, monkeypatch):
    import os

    from ecgtext.errors import UnreadableFileError
    from ecgtext.io import expand_inputs, read_ecg

    locked = str(tree / "b")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # works as root too, where chmod would not
    found = expand_inputs([str(tree)])
    assert found.failed_paths == [locked]
    assert "permission denied: cannot list the folder" in str(found.failures[0])
    assert not any("00002_hr" in p for p in found.paths)
    listed = expand_paths([str(tree)])
    assert listed[-1] == locked  # kept, so a batch reads it and counts one failure
    with pytest.raises(UnreadableFileError, match="permission denied"):
        read_ecg(locked)


def test_unreadable_files_and_folders_with_real_permissions(tree):
    from ecgtext.errors import UnreadableFileError
    from ecgtext.io import expand_inputs, read_ecg

    if not chmod_is_effective(tree):
        pytest.skip("running as root (or modes ignored): chmod cannot make a file unreadable")
    (tree / "b").chmod(0)
    (tree / "a.npy").chmod(0)
    try:
        found = expand_inputs([str(tree)])
        assert found.failed_paths == [str(tree / "b")]
        with pytest.raises(UnreadableFileError, match="permission denied"):
            read_ecg(tree / "a.npy")
    finally:
        (tree / "b").chmod(0o755)
        (tree / "a.npy").chmod(0o644)


def test_symlinked_folders_are_followed_once_even_in_a_loop(tree, tmp_path_factory):
    import os

    outside = tmp_path_factory.mktemp("outside")
    for ext in ("hea", "dat"):
        shutil.copy(PTBXL / f"00003_hr.{ext}", outside / f"00003_hr.{ext}")
    os.symlink(outside, tree / "linked")          # a symlinked dataset folder
    os.symlink(tree, tree / "b" / "loop")          # a loop back to the top
    os.symlink(tree / "b", tree / "b2")            # a second way into b
    got = expand_paths([str(tree)])
    names = sorted(os.path.basename(p) for p in got)
    assert names.count("00003_hr.hea") == 1 and names.count("00002_hr.hea") == 1
    assert names.count("00001_hr.hea") == 1 and len(got) == len(set(map(os.path.realpath, got)))
    globbed = expand_paths([str(tree / "**" / "*.hea")])  # a glob through the loop
    assert sorted(os.path.basename(p) for p in globbed) == ["00001_hr.hea", "00002_hr.hea",
                                                           "00003_hr.hea", "E07500.hea"]


def test_duplicates_are_removed_by_real_path(tree):
    import os

    os.symlink(tree / "00001_hr.hea", tree / "alias.hea")
    os.symlink(tree / "00001_hr.dat", tree / "alias.dat")
    got = expand_paths([str(tree / "00001_hr.hea"), str(tree / "alias.hea"), str(tree / "00001_hr")])
    assert got == [str(tree / "00001_hr.hea")]


def test_uppercase_header_extension(tmp_path):
    from ecgtext.io import read_ecg

    shutil.copy(PTBXL / "00001_hr.hea", tmp_path / "00001_hr.HEA")
    shutil.copy(PTBXL / "00001_hr.dat", tmp_path / "00001_hr.dat")
    assert expand_paths([str(tmp_path)]) == [str(tmp_path / "00001_hr.HEA")]
    for given in ("00001_hr.HEA", "00001_hr", "00001_hr.dat"):
        assert read_ecg(tmp_path / given).signal.shape == (12, 5000)


def test_stdin_names_that_are_not_utf8(tmp_path):
    import os

    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.npy"
    np.save(os.fsdecode(raw), np.zeros((12, 10)))

    class Stdin:  # sys.stdin-like: text wrapper over a byte buffer
        buffer = io.BytesIO(raw + b"\n# a comment\n\n")

    assert [os.fsencode(p) for p in expand_paths(["-"], stdin=Stdin())] == [raw]
