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


def test_results_are_shown_under_their_documents_titles():
    from askcorpus.cli import format_response
    from askcorpus.records import Answer, Passage, Result, SearchResponse

    text = "Current ISKP Leadership\n\nISKP is led by Sanaullah Ghafari."
    passage = Passage("004_x.txt", 0, len(text), text, tokens=12)
    answer = Answer("ISKP is led by Sanaullah Ghafari.", "004_x.txt", 25, len(text), 0.97)
    response = SearchResponse(query="Who leads ISKP?", mode="hybrid", answer=answer, reranked=True,
                              results=(Result(rank=1, passage_id=0, passage=passage, score=1.4, page=3,
                                              rerank_score=9.17),))
    shown = format_response(response, titles={"004_x.txt": "Security threats"})
    assert shown.splitlines()[3] == "        Security threats [25:58]  confidence 0.97"
    assert " 1. Security threats\n    004_x.txt p.3 [0:58]  rerank +9.17 (first stage 1.4000)  12 tokens\n" in shown
    assert "[[ISKP is led by Sanaullah Ghafari.]]" in shown
    # Without titles (or a document missing from them) the doc_id stands in.
    assert " 1. 004_x.txt\n" in format_response(response)


def test_a_setting_out_of_range_is_one_line_naming_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASKCORPUS_K", "500")
    assert cli_main(["ask", "anything?", "--index", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("askcorpus: error: ASKCORPUS_K: Input should be less than or equal to 100 (got '500')")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("ASKCORPUS_K")
    monkeypatch.setenv("ASKCORPUS_CHUNK_OVERLAP", "200")
    assert cli_main(["index", "--index", str(tmp_path / "index")]) == 2
    assert "chunk_overlap (200) must be smaller than chunk_tokens (128)" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_ask_generate_without_a_model_says_how_to_configure_one(tmp_path, capsys):
    assert cli_main(["ask", "Who leads ISKP?", "--generate", "--index", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err
    assert "ASKCORPUS_LLM_URL" in err and "ASKCORPUS_LLM_GGUF" in err
    assert not (tmp_path / "index").exists()  # refused before anything loads or builds


def _scripted_env(monkeypatch, settings, url):
    for name, value in {"ASKCORPUS_LLM_URL": url, "ASKCORPUS_MODEL": settings.model,
                        "ASKCORPUS_RERANK_MODEL": settings.rerank_model}.items():
        monkeypatch.setenv(name, value)
    return ["--corpus", str(settings.corpus), "--index", str(settings.index)]


def test_ask_generate_streams_then_lists_what_each_sentence_cites(fake_settings, scripted_llm, capsys, monkeypatch):
    llm, url = scripted_llm
    paths = _scripted_env(monkeypatch, fake_settings, url)
    llm.say("ISKP has 123456 fighters [1]. Nobody knows why.")
    assert cli_main(["ask", "How many fighters does ISKP have?", "-k", "3", "--generate", *paths]) == 0
    out = capsys.readouterr().out
    assert "Generated answer:\nISKP has 123456 fighters [1]. Nobody knows why." in out
    assert "UNSUPPORTED ISKP has 123456 fighters [1].  ([1])" in out
    assert "UNSUPPORTED Nobody knows why.  (no citation)" in out
    assert "Citations:\n  [1] " in out and "scripted-model" in out


def test_ask_generate_json_carries_the_generated_object(fake_settings, scripted_llm, capsys, monkeypatch):
    import json

    llm, url = scripted_llm
    paths = _scripted_env(monkeypatch, fake_settings, url)
    llm.say("The passages do not answer this question.")
    assert cli_main(["ask", "Who won the 1998 World Cup?", "--generate", "--json", *paths]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["generated"]["abstained"] is True and data["generated"]["text"] is None
    assert data["results"] and len(data["generated"]["citations"]) >= 1
