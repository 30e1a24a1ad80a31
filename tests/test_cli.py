"""The `askcorpus` command fails cleanly: a command that fails on its corpus writes nothing."""

from __future__ import annotations

import pytest

from askcorpus.cli import main as cli_main


def _files_under(path):
    return sorted(p for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("command", [["ask", "Who leads ISKP?"], ["index"], ["eval", "--split", "test"]])
def test_a_missing_corpus_leaves_nothing_behind(tmp_path, capsys, command):
    index = tmp_path / "index"
    code = cli_main([*command, "--corpus", str(tmp_path / "no-such-folder"), "--index", str(index)])
    assert code == 2
    assert "no-such-folder does not exist" in capsys.readouterr().err
    assert _files_under(tmp_path) == []  # no index folder, no encoder export, no lock file


def test_a_corpus_without_documents_leaves_nothing_behind(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "photo.png").write_bytes(b"\x89PNG")
    assert cli_main(["ask", "anything?", "--corpus", str(corpus), "--index", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err
    assert "holds no .txt" in err and "(1 other files skipped)" in err
    assert not (tmp_path / "index").exists()
