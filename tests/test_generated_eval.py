"""Scoring generated answers and measuring the support check: the metric functions on hand-made answers, the
claims and the threshold choice on hand-made scores, `eval --generate` against the scripted endpoint, and (slow)
both commands with the real models."""

from __future__ import annotations

import json
import random

import pytest

from askcorpus.cli import main as cli_main
from askcorpus.config import Settings
from askcorpus.evaluate import QAItem, Span
from askcorpus.evaluate import generated as G
from askcorpus.evaluate import support as S
from askcorpus.evaluate.generated_suite import GeneratedRun, format_generated, score_generated, \
    score_generated_by_kind
from askcorpus.generate import NOT_CONFIGURED
from askcorpus.generate.check import is_supported
from askcorpus.generate.prompt import NO_ANSWER
from askcorpus.records import Answer, Citation, Document, Generated, GeneratedSentence, Passage
from askcorpus.rerank import TermOverlapReranker

from conftest import QA_FILE, SEEDS

EVIDENCE = (Span("a.txt", 100, 200),)


def _citation(n: int, doc: str, start: int, end: int) -> Citation:
    return Citation(n, passage_id=n, doc_id=doc, start=start, end=end, page=None, title=doc)


CITATIONS = (_citation(1, "a.txt", 50, 150), _citation(2, "b.txt", 100, 200), _citation(3, "a.txt", 300, 400))


def _generated(text: str | None, cites: list[tuple[int, ...]], supported: list[bool] | None = None,
               **fields) -> Generated:
    supported = supported or [True] * len(cites)
    sentences = tuple(GeneratedSentence(f"s{i} [x].", 0, 1, c, ok) for i, (c, ok) in enumerate(zip(cites, supported)))
    return Generated(text, sentences, CITATIONS, **fields)


# --- the metric functions -------------------------------------------------------------------------------


def test_the_shown_text_has_no_markers():
    assert G.shown_text(_generated("ISKP was founded in 2015 [1, 2]. It grew [3].", [])) == \
        "ISKP was founded in 2015 . It grew ."
    assert G.shown_text(_generated(None, [], abstained=True)) is None


def test_the_answer_is_contained_after_normalisation():
    answer = _generated("It was the United  STATES Institute of Peace’s report [1].", [(1,)])
    assert G.answer_contained(answer, "United States Institute of Peace", "factoid") == 1.0
    assert G.answer_contained(answer, "Brookings", "factoid") == 0.0
    # A list answer passes when every part appears, in any order.
    listed = _generated("Iran and Pakistan [1], also the Central Asian states [3].", [(1,), (3,)])
    assert G.answer_contained(listed, "Pakistan, Iran and the Central Asian states", "list") == 1.0
    assert G.answer_contained(listed, "Pakistan, Iran and the Central Asian states", "factoid") == 0.0
    assert G.answer_contained(_generated(None, [], abstained=True), "Iran", "factoid") == 0.0


def test_token_f1_by_hand():
    assert G.token_f1("The United States Institute of Peace", "United States Institute of Peace") == 1.0
    # ours: {conducting, urban, warfare, now} ; theirs: {conducting, urban, warfare} -> P 3/4, R 1, F1 6/7
    assert G.token_f1("Now conducting urban warfare", "conducting urban warfare") == pytest.approx(6 / 7)
    assert G.token_f1("nothing shared", "conducting urban warfare") == 0.0
    assert G.token_f1(None, "conducting urban warfare") == 0.0
    assert G.answer_tokens("The 6,500 fighters’ base") == ["6", "500", "fighters", "base"]


def test_cited_passages_are_those_sentences_cite_each_once():
    answer = _generated("x", [(3, 1), (1,), (9,)])  # 9 names no passage given
    assert [c.n for c in G.cited_passages(answer)] == [3, 1]
    assert G.cited_passages(_generated("x", [()])) == ()


def test_citation_precision():
    # [1] a.txt 50-150 overlaps the evidence a.txt 100-200; [2] is the same offsets in another document;
    # [3] is in a.txt but past the span.
    assert G.citation_precision(_generated("x", [(1,)]), EVIDENCE) == 1.0
    assert G.citation_precision(_generated("x", [(1,), (2,)]), EVIDENCE) == 0.5
    assert G.citation_precision(_generated("x", [(1, 2, 3)]), EVIDENCE) == pytest.approx(1 / 3)
    assert G.citation_precision(_generated("x", [()]), EVIDENCE) is None  # cites nothing: does not count
    assert G.citation_precision(_generated(None, [(1,)], abstained=True), EVIDENCE) is None
    touching = _generated("x", [(1,)])
    assert G.citation_precision(touching, (Span("a.txt", 150, 160),)) == 0.0  # half-open: no shared character


def test_citation_recall():
    two = (Span("a.txt", 100, 200), Span("c.txt", 0, 10))
    assert G.citation_recall(_generated("x", [(1,)]), two) == 0.5
    assert G.citation_recall(_generated("x", [(2, 3)]), two) == 0.0
    assert G.citation_recall(_generated(None, [(1,)], abstained=True), two) == 0.0
    assert G.citation_recall(_generated("x", [(1,)]), ()) is None


def test_supported_share_pools_every_sentence():
    records = [_generated("x", [(1,), (2,)], [True, False]), _generated(None, [(1,)], [False], abstained=True),
               _generated(None, [], error="boom")]
    assert G.supported_share(records) == pytest.approx(1 / 3)
    assert G.supported_share([_generated(None, [], error="boom")]) is None


def test_abstained_and_failed():
    assert G.abstained(_generated(None, [], abstained=True)) == 1.0
    assert G.abstained(_generated("x", [(1,)])) == 0.0
    assert G.failed(_generated(None, [], error="the model returned no text")) == 1.0
    assert G.failed(_generated(None, [], abstained=True)) == 0.0


# --- scoring runs ---------------------------------------------------------------------------------------

A1 = QAItem("a1", "who?", "United States Institute of Peace", EVIDENCE, "dev", "factoid")
A2 = QAItem("a2", "which?", "Pakistan, Iran", (Span("b.txt", 100, 200),), "dev", "list")
U1 = QAItem("u1", "none?", None, (), "dev", "unanswerable")


def _runs() -> list[GeneratedRun]:
    right = _generated("The United States Institute of Peace [1].", [(1,)], prompt_tokens=100,
                       completion_tokens=10, seconds=1.0)
    abstained = _generated(None, [(2,)], [False], abstained=True, prompt_tokens=200, completion_tokens=20,
                           seconds=3.0)
    failed = _generated(None, [], error="llama.cpp failed", seconds=2.0)
    return [GeneratedRun(A1, Answer("United States Institute of Peace", "a.txt", 120, 150, 0.9), right),
            GeneratedRun(A2, None, abstained),
            GeneratedRun(U1, None, failed)]


def test_score_generated_by_hand():
    scores = score_generated(_runs())
    assert scores["n"] == 3 and scores["errors"] == 1
    assert scores["generated_accuracy"] == 0.5  # a1 right, a2 abstained
    assert scores["extractive_accuracy"] == 0.5 and scores["extractive_contained"] == 0.5
    assert scores["generated_f1"] == 0.5 and scores["extractive_f1"] == 0.5
    assert scores["citation_precision"] == 1.0  # only a1 shows an answer that cites
    assert scores["citation_recall"] == 0.5  # a1 1.0, a2 (abstained) 0.0
    assert scores["supported_sentences"] == 0.5  # a1's one supported, a2's one not
    assert scores["false_abstention"] == 0.5 and scores["extractive_false_abstention"] == 0.5
    assert scores["abstention"] == 0.0  # u1 failed: not an abstention
    assert scores["extractive_abstention"] == 1.0
    assert scores["prompt_tokens"] == 150 and scores["completion_tokens"] == 15  # the failed one has none
    assert scores["seconds"] == 2.0


def test_score_per_kind_and_the_table():
    by_kind = score_generated_by_kind(_runs())
    assert list(by_kind) == ["factoid", "list", "unanswerable"]
    assert sum(scores["n"] for scores in by_kind.values()) == 3
    assert by_kind["unanswerable"]["generated_accuracy"] is None
    assert by_kind["factoid"]["generated_accuracy"] == 1.0
    from askcorpus.evaluate.generated_suite import GeneratedEval

    table = format_generated(GeneratedEval(tuple(_runs()), "hybrid+rerank", "m", score_generated(_runs()),
                                           by_kind), "dev")
    header = next(line for line in table.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "all", "factoid", "list", "unanswerable"]
    assert "3 questions, split dev (2 answerable, 1 unanswerable)" in table


# --- the support check's claims and threshold -------------------------------------------------------------


def test_altered_sentences_change_one_fact_the_passage_lacks():
    passage = "ISKP was founded in 2015 and had 2,016 fighters and 6,500 more."
    for seed in range(4):  # a year moves a few years, either way first; 2016 is held ("2,016"), so 2014
        assert S.altered("ISKP was founded in 2015.", passage, ["Kabul"], random.Random(seed)) == \
            ("ISKP was founded in 2014.", "2015 -> 2014")
    text, change = S.altered("It had 6,500 fighters.", passage, [], random.Random(1))
    assert (text, change) == ("It had 6,501 fighters.", "6,500 -> 6,501")
    # No number: a name, never one the passage holds; a sentence-opening word is not one unless named elsewhere.
    text, change = S.altered("Fighters left Kabul’s outskirts.", "Fighters left Kabul’s outskirts.",
                             ["Fighters", "Kabul", "Herat"], random.Random(3))
    assert change in ("Kabul’s -> Herat’s", "Fighters -> Herat")
    assert S.altered("Fighters left Kabul’s outskirts.", "Fighters left Kabul’s outskirts.", ["Kabul", "Herat"],
                     random.Random(3)) == ("Fighters left Herat’s outskirts.", "Kabul’s -> Herat’s")
    assert S.altered("they left.", "they left.", ["Herat"], random.Random(3)) is None


def _documents() -> dict[str, Document]:
    texts = {
        "a.txt": "Intro line here.\n\nThe group was founded in 2015 by Hafiz Saeed Khan in Nangarhar. It grew fast.",
        "b.txt": "The weather in Tashkent was unusually dry for the whole of that long summer season.",
    }
    return {doc_id: Document(doc_id, text, "x", doc_id) for doc_id, text in texts.items()}


def test_claims_from_hand_made_documents_are_deterministic():
    documents = _documents()
    a = documents["a.txt"].text
    start = a.index("The group")
    passages = [Passage("a.txt", 0, len(a), a, 20), Passage("b.txt", 0, 80, documents["b.txt"].text, 15)]
    item = QAItem("q1", "when?", "2015", (Span("a.txt", start, start + 60),), "dev", "factoid")
    claims, skipped = S.build_claims([item], documents, passages)
    assert skipped == []
    assert [c.kind for c in claims] == ["reference", "altered", "foreign"]
    assert claims[0].text == "The group was founded in 2015 by Hafiz Saeed Khan in Nangarhar."
    assert claims[1].change in ("2015 -> 2014", "2015 -> 2016")
    assert claims[2].text == documents["b.txt"].text and claims[2].change == "b.txt"
    assert all(c.passage == a for c in claims)
    assert S.build_claims([item], documents, passages) == (claims, skipped)


def test_the_sweep_agrees_with_is_supported():
    documents = _documents()
    a = documents["a.txt"].text
    start = a.index("The group")
    item = QAItem("q1", "when?", "2015", (Span("a.txt", start, start + 60),), "dev", "factoid")
    passages = [Passage("a.txt", 0, len(a), a, 20), Passage("b.txt", 0, 80, documents["b.txt"].text, 15)]
    reranker = TermOverlapReranker()
    result = S.measure_support([item], documents, passages, reranker, thresholds=(0.0, 0.5, 1.0))
    for scored in result.scored:
        for threshold in (0.0, 0.5, 1.0):
            assert scored.accepted(threshold) == is_supported(scored.claim.text, [scored.claim.passage], reranker,
                                                              threshold)


def _scored(kind: str, score: float, missing: tuple[str, ...] = ()) -> S.ScoredClaim:
    return S.ScoredClaim(S.Claim("q", kind, "t", "p"), missing, score)


def test_choose_the_threshold_mid_gap_or_none():
    scored = [_scored("reference", 5.0), _scored("reference", 2.0), _scored("altered", 6.0, ("2016",)),
              _scored("foreign", 0.5), _scored("foreign", -3.0, ("kabul",))]
    rows = S.sweep(scored, thresholds=(0.0, 1.0, 1.5, 2.0, 3.0))
    assert [r.reference_accepted for r in rows] == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert [r.foreign_rejected for r in rows] == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert all(r.altered_rejected == 1.0 for r in rows)
    assert rows[0].unsupported_rejected == pytest.approx(2 / 3)
    assert S.choose_threshold(rows) == 1.5  # 1.0, 1.5 and 2.0 accept every reference claim: the middle
    assert S.choose_threshold(rows[:1]) is None


# --- the command ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hashing_index(tmp_path_factory):
    from askcorpus.build import build_index
    from askcorpus.embed import HashingEmbedder

    settings = Settings(corpus=SEEDS, index=tmp_path_factory.mktemp("hashing-index"), model="hashing-64",
                        rerank_model="overlap")
    build_index(settings, HashingEmbedder(dim=64))
    return settings


def _eval(monkeypatch, index, *extra: str, env: dict | None = None) -> int:
    for name in ("ASKCORPUS_LLM_URL", "ASKCORPUS_LLM_MODEL", "ASKCORPUS_LLM_GGUF", "ASKCORPUS_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASKCORPUS_MODEL", "hashing-64")
    monkeypatch.setenv("ASKCORPUS_RERANK_MODEL", "overlap")
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return cli_main(["eval", "--qa", str(QA_FILE), "--corpus", str(SEEDS), "--index", str(index), *extra])


def test_eval_generate_without_a_model_is_exit_2(monkeypatch, capsys, hashing_index):
    assert _eval(monkeypatch, hashing_index.index, "--generate", "--split", "dev") == 2
    assert NOT_CONFIGURED in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (("--generate", "--support"), "choose one of --beir, --support and --generate"),
    (("--support", "--report", "out"), "with --support use --json"),
    (("--generate", "--limit", "0"), "--limit must be at least 1"),
])
def test_eval_refuses_mixed_tasks(monkeypatch, capsys, hashing_index, scripted_llm, extra, message):
    _, base = scripted_llm
    assert _eval(monkeypatch, hashing_index.index, *extra,
                 env={"ASKCORPUS_LLM_URL": base, "ASKCORPUS_LLM_MODEL": "scripted-model"}) == 2
    assert message in capsys.readouterr().err


def _generate_json(monkeypatch, capsys, index, base: str, limit: int) -> dict:
    code = _eval(monkeypatch, index, "--generate", "--split", "dev", "--limit", str(limit), "--json",
                 env={"ASKCORPUS_LLM_URL": base, "ASKCORPUS_LLM_MODEL": "scripted-model"})
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_eval_generate_scripted_abstentions(monkeypatch, capsys, hashing_index, scripted_llm):
    llm, base = scripted_llm
    llm.say(NO_ANSWER)
    data = _generate_json(monkeypatch, capsys, hashing_index.index, base, 12)
    assert data["questions"] == 12 and len(llm.requests) == 12
    metrics = data["metrics"]
    assert metrics["false_abstention"] == 1.0 and metrics["generated_accuracy"] == 0.0
    assert metrics["errors"] == 0 and metrics["supported_sentences"] is None
    assert sum(kind["n"] for kind in data["by_kind"].values()) == 12


def test_eval_generate_scripted_failures_are_counted(monkeypatch, capsys, hashing_index, scripted_llm):
    llm, base = scripted_llm
    llm.say("", status=500)
    metrics = _generate_json(monkeypatch, capsys, hashing_index.index, base, 3)["metrics"]
    assert metrics["errors"] == 3 and metrics["false_abstention"] == 0.0 and metrics["prompt_tokens"] is None


# --- the real models --------------------------------------------------------------------------------------


def _real_env(monkeypatch, seeds_settings) -> None:
    monkeypatch.setenv("ASKCORPUS_ENCODER_CACHE", str(seeds_settings.encoder_cache_dir))
    for name in ("ASKCORPUS_MODEL", "ASKCORPUS_RERANK_MODEL", "ASKCORPUS_LLM_URL", "ASKCORPUS_LLM_MODEL",
                 "ASKCORPUS_SUPPORT_MIN_SCORE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_the_support_threshold_meets_its_targets_on_dev(monkeypatch, capsys, seeds_settings):
    _real_env(monkeypatch, seeds_settings)
    assert cli_main(["eval", "--support", "--split", "dev", "--json", "--qa", str(QA_FILE),
                     "--index", str(seeds_settings.index)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["claims"]["reference"] >= 80 and data["claims"]["altered"] >= 80 and data["claims"]["foreign"] >= 80
    rows = {row["threshold"]: row for row in data["thresholds"]}
    assert data["chosen"] is not None, "no threshold rejects 0.95 of the altered and of the foreign claims"
    for threshold in (data["chosen"], Settings().support_min_score):  # the measured choice and the default
        row = rows[threshold]
        assert row["altered_rejected"] >= S.PRECISION_TARGET, row
        assert row["foreign_rejected"] >= S.PRECISION_TARGET, row
        assert row["reference_accepted"] >= S.RECALL_TARGET, row


@pytest.mark.slow
def test_eval_generate_with_the_test_model(monkeypatch, capsys, seeds_settings, smollm2_gguf, tmp_path):
    _real_env(monkeypatch, seeds_settings)
    monkeypatch.setenv("ASKCORPUS_LLM_GGUF", str(smollm2_gguf))
    monkeypatch.setenv("ASKCORPUS_LLM_MAX_TOKENS", "48")
    dev = [json.loads(line) for line in QA_FILE.read_text(encoding="utf-8").splitlines()]
    dev = [record for record in dev if record.get("split") == "dev"]
    answerable = [r for r in dev if r["evidence"]][:4]
    unanswerable = [r for r in dev if not r["evidence"]][:1]
    qa = tmp_path / "qa.jsonl"
    records = answerable[:2] + unanswerable + answerable[2:]  # --limit 4 keeps the unanswerable one
    qa.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert cli_main(["eval", "--generate", "--split", "dev", "--limit", "4", "--json", "--qa", str(qa),
                     "--index", str(seeds_settings.index)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["questions"] == 4 and data["mode"] == "hybrid+rerank"
    assert data["model"] == smollm2_gguf.name
    metrics = data["metrics"]
    for name, value in metrics.items():
        if name in ("n", "errors", "prompt_tokens", "completion_tokens", "seconds") or value is None:
            continue
        assert 0.0 <= value <= 1.0, (name, value)
    assert metrics["n"] == 4 and metrics["errors"] == 0
    assert metrics["abstention"] is not None and metrics["false_abstention"] is not None
    assert metrics["prompt_tokens"] > 0 and 0 < metrics["completion_tokens"] <= 48 and metrics["seconds"] > 0
    assert sum(kind["n"] for kind in data["by_kind"].values()) == 4
    assert data["by_kind"]["unanswerable"]["n"] == 1
