"""Finding and checking the ROOT files the demo reads: the packaged sample and a user's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import uproot

from podgrid.rootfiles import DataError, find_sources, sample_file, sample_sources

REPO = Path(__file__).resolve().parents[2]
ZMUMU = REPO / "examples" / "data" / "uproot-Zmumu.root"
NANOAOD = REPO / "examples" / "data" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def test_the_sample_is_the_shipped_cms_file_with_all_its_events() -> None:
    assert sample_file().resolve() == ZMUMU.resolve()  # podgrid/data links to examples/data
    (source,) = sample_sources()
    with uproot.open(ZMUMU) as file:
        assert source.entries == file["events"].num_entries
    assert (source.tree, source.branch, source.jagged) == ("events", "M", False)
    assert Path(source.path).is_absolute()


def test_a_glob_finds_every_file_once_in_order(tmp_path: Path) -> None:
    for name in ("b.root", "a.root"):
        shutil.copy(ZMUMU, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not matched")
    pattern = str(tmp_path / "*.root")
    sources = find_sources([pattern, str(tmp_path / "a.root")], "events", "M")
    assert [Path(s.path).name for s in sources] == ["a.root", "b.root"]


def test_a_jagged_branch_is_found_as_jagged() -> None:
    (source,) = find_sources([str(NANOAOD)], "Events", "Muon_pt")
    assert source.jagged
    assert source.entries == 200


@pytest.mark.parametrize(
    ("files", "tree", "branch", "message"),
    [
        (["{tmp}/missing.root"], "events", "M", "--file '{tmp}/missing.root': no such file"),
        (["{tmp}/*.nothing"], "events", "M", "--file '{tmp}/*.nothing': no file matches"),
        (["{tmp}"], "events", "M", "--file '{tmp}': not a file"),
        (["{tmp}/text.root"], "events", "M", "{tmp}/text.root: not a ROOT file"),
        (["{zmumu}"], "Events", "M", "{zmumu}: no tree 'Events' (trees in the file: events)"),
        (["{zmumu}"], "events", "mass", "tree 'events' has no branch 'mass' (branches: Type, "),
        (["{zmumu}"], "events", "Type", "branch 'Type' holds AsStrings(), not numbers"),
        ([], "events", "M", "--file: no file given"),
    ],
)
def test_what_is_missing_is_named(
    tmp_path: Path, files: list[str], tree: str, branch: str, message: str
) -> None:
    (tmp_path / "text.root").write_text("hello, not ROOT")
    fill = {"tmp": str(tmp_path), "zmumu": str(ZMUMU.resolve())}
    with pytest.raises(DataError) as caught:
        find_sources([f.format(**fill) for f in files], tree, branch)
    assert message.format(**fill) in str(caught.value)


def test_a_truncated_root_file_is_a_data_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.root"
    broken.write_bytes(ZMUMU.read_bytes()[:300])
    with pytest.raises(DataError, match=r"broken\.root: not a readable ROOT file"):
        find_sources([str(broken)], "events", "M")
