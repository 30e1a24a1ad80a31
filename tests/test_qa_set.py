"""The question set: the real evals/qa.jsonl checks clean against the seeds; broken sets are reported."""

from __future__ import annotations

import collections
import copy
import json

import pytest

from askcorpus.evaluate import KINDS, SPLITS, QAFormatError, blocking_problems, check_qa, load_qa
from askcorpus.evaluate.qa import answer_in_evidence
from askcorpus.ingest import load_corpus
from askcorpus.records import Document

from conftest import QA_FILE, SEEDS


@pytest.fixture(scope="module")
def seed_documents() -> list[Document]:
    documents, skipped = load_corpus(SEEDS)
    assert not skipped
    return documents


# --- the real set -------------------------------------------------------------------------------


def test_real_question_set_is_sound(seed_documents):
    assert QA_FILE.exists(), f"{QA_FILE} is missing"
    problems = check_qa(QA_FILE, seed_documents)
    assert problems == [], "\n".join(problems)


def test_real_question_set_composition():
    questions = load_qa(QA_FILE)
    assert len(questions) >= 170
    assert {q.split for q in questions} == set(SPLITS)
    per_split = collections.Counter(q.split for q in questions)
    for split in SPLITS:
        kinds = {q.kind for q in questions if q.split == split}
        assert kinds == set(KINDS), f"split {split} lacks kinds {set(KINDS) - kinds}"
        assert per_split[split] >= 50
    assert sum(not q.answerable for q in questions) >= 10


def test_split_filter():
    everything = load_qa(QA_FILE)
    dev, test = load_qa(QA_FILE, split="dev"), load_qa(QA_FILE, split="test")
    assert len(dev) + len(test) == len(everything)
    assert {q.split for q in dev} == {"dev"} and {q.split for q in test} == {"test"}
    with pytest.raises(QAFormatError):
        load_qa(QA_FILE, split="train")


# --- broken fixtures ----------------------------------------------------------------------------

CORPUS = {"a.txt": "Alpha beta gamma. The capital of Freedonia is Fredville.\nIt exports “tea”, salt and tin.",
          "b.txt": "Another document about nothing in particular."}


_NL = CORPUS["a.txt"].index("\n")


def _good() -> list[dict]:
    text = CORPUS["a.txt"]
    s1 = text.index("The capital")
    s2 = text.index("It exports")
    return [
        {"id": "q1", "question": "What is the capital of Freedonia?", "answer": "Fredville",
         "evidence": [{"doc_id": "a.txt", "start": s1, "end": text.index("\n")}], "split": "dev", "kind": "factoid"},
        {"id": "q2", "question": "What does Freedonia export?", "answer": '"tea", salt and tin',
         "evidence": [{"doc_id": "a.txt", "start": s2, "end": len(text)}], "split": "test", "kind": "list"},
        {"id": "q3", "question": "Who won the 1930 World Cup?", "answer": None, "evidence": [],
         "split": "test", "kind": "unanswerable"},
    ]


def test_good_fixture_passes_from_records_and_from_a_file(tmp_path):
    assert check_qa(_good(), CORPUS) == []
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _good()) + "\n\n", encoding="utf-8")
    assert check_qa(path, CORPUS) == []
    assert [q.id for q in load_qa(path)] == ["q1", "q2", "q3"]
    assert load_qa(path)[2].answerable is False


def _break(index: int, change) -> list[dict]:
    records = copy.deepcopy(_good())
    change(records[index])
    return records


BROKEN = {
    "span past the end": (_break(0, lambda r: r["evidence"][0].update(end=10_000)), "past the end"),
    "unknown document": (_break(0, lambda r: r["evidence"][0].update(doc_id="zzz.txt")), "not in the corpus"),
    "answer not in evidence": (_break(0, lambda r: r.update(answer="Paris")), "does not appear"),
    "answer in another span only": (
        _break(0, lambda r: r["evidence"][0].update(start=0, end=17)), "does not appear"),
    "start after end": (_break(0, lambda r: r["evidence"][0].update(start=50, end=40)), "start < end"),
    "negative start": (_break(0, lambda r: r["evidence"][0].update(start=-1)), "start < end"),
    "start not an int": (_break(0, lambda r: r["evidence"][0].update(start="3")), "must be an integer"),
    "start a bool": (_break(0, lambda r: r["evidence"][0].update(start=True)), "must be an integer"),
    "missing key": (_break(0, lambda r: r.pop("kind")), "missing key 'kind'"),
    "missing answer key": (_break(2, lambda r: r.pop("answer")), "missing key 'answer'"),
    "answer wrong type": (_break(0, lambda r: r.update(answer=42)), "string or null"),
    "empty answer": (_break(0, lambda r: r.update(answer="  ")), "empty"),
    "empty question": (_break(0, lambda r: r.update(question=" ")), "'question' is empty"),
    "empty split": (_break(0, lambda r: r.update(split=" ")), "'split' is empty"),
    "empty kind": (_break(0, lambda r: r.update(kind="")), "'kind' is empty"),
    "evidence not a list": (_break(0, lambda r: r.update(evidence={"doc_id": "a.txt"})), "'evidence' must be"),
    "unanswerable with evidence": (
        _break(2, lambda r: r.update(evidence=[{"doc_id": "b.txt", "start": 0, "end": 7}])), "cites evidence"),
    "unanswerable with an answer": (_break(2, lambda r: r.update(answer="Uruguay")), "answer is not null"),
    "null answer on an answerable kind": (_break(0, lambda r: r.update(answer=None)), "answer is null"),
    "answerable without evidence": (_break(0, lambda r: r.update(evidence=[])), "needs at least one"),
    "white-space span": (
        _break(0, lambda r: r["evidence"].append({"doc_id": "a.txt", "start": _NL, "end": _NL + 1})), "white space"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_fixture_is_reported(name):
    records, expected = BROKEN[name]
    problems = check_qa(records, CORPUS)
    assert problems, f"{name}: no problem reported"
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("record ") for p in problems)


def test_duplicate_ids_and_questions_are_reported():
    records = _good() + [dict(_good()[0])]
    problems = check_qa(records, CORPUS)
    assert any("duplicate id" in p for p in problems)
    assert any("same question" in p for p in problems)


def test_file_problems_name_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    lines = [json.dumps(r) for r in _good()]
    lines.insert(1, "{not json")
    path.write_text("\n".join(lines), encoding="utf-8")
    problems = check_qa(path, CORPUS)
    assert problems == ["line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2"]
    with pytest.raises(QAFormatError, match="line 2"):
        load_qa(path)


def test_empty_or_missing_set(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert check_qa(empty, CORPUS) == ["the question set is empty"]
    with pytest.raises(QAFormatError, match="cannot read"):
        load_qa(tmp_path / "missing.jsonl")


def test_load_refuses_a_malformed_set_listing_every_problem():
    records = _break(0, lambda r: r.pop("kind"))
    records[1]["evidence"][0]["end"] = "x"
    with pytest.raises(QAFormatError) as raised:
        load_qa(records)
    assert "2 problem(s)" in str(raised.value)
    assert "id q1" in str(raised.value) and "id q2" in str(raised.value)


def test_documents_may_be_given_as_documents_or_texts(seed_documents):
    by_id = {d.doc_id: d for d in seed_documents}
    doc = seed_documents[0]
    record = {"id": "x", "question": "q?", "answer": doc.text[5:15], "split": "dev", "kind": "factoid",
              "evidence": [{"doc_id": doc.doc_id, "start": 0, "end": 40}]}
    assert check_qa([record], seed_documents) == check_qa([record], by_id) == []
    assert check_qa([record], {k: d.text for k, d in by_id.items()}) == []


def test_answer_matching_folds_case_quotes_and_spaces_but_not_words():
    evidence = ["The Taliban’s  return to\npower, said the USIP."]
    assert answer_in_evidence("taliban's return to power", evidence, "factoid")
    assert answer_in_evidence("USIP.", evidence, "factoid")
    assert not answer_in_evidence("Taliban's return to office", evidence, "factoid")
    # A list answer may be assembled from parts of the evidence, a factoid may not.
    assert answer_in_evidence("return and USIP", evidence, "list")
    assert not answer_in_evidence("return and USIP", evidence, "factoid")
    assert not answer_in_evidence("return and Kabul", evidence, "multi_doc")


# --- users' own sets ----------------------------------------------------------------------------


def test_any_kind_label_and_no_split_are_accepted(tmp_path):
    records = _good()
    for record, kind in zip(records, ["who", "enumeration", "negative"]):
        record["kind"] = kind
        record.pop("split")
    assert check_qa(records, CORPUS) == []
    questions = load_qa(records)
    assert [q.kind for q in questions] == ["who", "enumeration", "negative"]
    assert [q.split for q in questions] == [None, None, None]
    assert questions[2].answerable is False  # unanswerable by its null answer, whatever its label


def test_asking_for_a_split_the_set_lacks_names_the_splits_present():
    with pytest.raises(QAFormatError, match="splits in the set: dev, test"):
        load_qa(_good(), split="validation")
    without = [{k: v for k, v in r.items() if k != "split"} for r in _good()]
    with pytest.raises(QAFormatError, match="leave --split out"):
        load_qa(without, split="test")


@pytest.mark.parametrize("name,blocking", [
    ("span past the end", True), ("unknown document", True), ("start not an int", True),
    ("unanswerable with evidence", True), ("answer not in evidence", False), ("white-space span", False),
])
def test_blocking_problems_are_the_ones_no_score_survives(name, blocking):
    records, expected = BROKEN[name]
    found = blocking_problems(records, CORPUS)
    assert bool(found) == blocking and all(expected in p for p in found)


def test_duplicate_ids_block_and_name_both_lines(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _good() + [dict(_good()[0], question="Other?")]),
                    encoding="utf-8")
    assert blocking_problems(path, CORPUS) == ["line 4 (id q1): duplicate id (first used at line 1)"]
