"""The generate stage without a model: markers, sentences, the support check, the prompt's budget, the writer."""

from __future__ import annotations

from typing import Iterator, Sequence

import pytest

from askcorpus.config import Settings
from askcorpus.errors import ConfigError
from askcorpus.generate import Generator, Usage, write_answer
from askcorpus.generate.check import facts, is_supported, missing_facts
from askcorpus.generate.citations import cited_sentences, clean_markers
from askcorpus.generate.prompt import NO_ANSWER, build_prompt, load_template
from askcorpus.generate.writer import STOPPED, check_reply
from askcorpus.errors import GenerationError
from askcorpus.records import Passage, Result
from askcorpus.rerank import TermOverlapReranker

FOUNDED = "The official announcement of ISKP’s formation was made in 2015 in Nangarhar."
LEADER = "As of 2022, ISKP is led by Sanaullah Ghafari alias Shahab al-Muhajir."


def _results(*texts: str) -> list[Result]:
    return [Result(rank, rank - 1, Passage(f"doc{rank}.txt", 10 * rank, 10 * rank + len(text), text,
                                           len(text.split())), 1.0 / rank, page=rank if rank == 2 else None)
            for rank, text in enumerate(texts, start=1)]


class WordGenerator(Generator):
    """Replies with a fixed text, a word a piece; counts a token per word. Records what it was sent."""

    backend = "scripted"
    name = "words"

    def __init__(self, reply: str = "", fail: str | None = None) -> None:
        self.reply = reply
        self.fail = fail
        self.messages: list = []
        self.closed_after: int | None = None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]

    def stream(self, messages, *, max_tokens: int, temperature: float) -> Iterator[str | Usage]:
        self.messages = list(messages)
        sent = 0
        try:
            for word in self.reply.split(" "):
                if self.fail and sent == 2:
                    raise GenerationError(self.fail)
                sent += 1
                yield word + " "
        except GeneratorExit:
            self.closed_after = sent
            raise
        yield Usage(11, sent, "stop")


# ------------------------------------------------------------------------------------------- markers


@pytest.mark.parametrize("reply, count, cleaned, dropped", [
    ("A [1]. B [2, 3].", 3, "A [1]. B [2, 3].", 0),
    ("A [1][4]. B [0].", 3, "A [1]. B.", 2),
    ("A [7, 2].", 3, "A [2].", 1),
    ("No markers at all.", 3, "No markers at all.", 0),
])
def test_markers_out_of_range_are_dropped_and_counted(reply, count, cleaned, dropped):
    assert clean_markers(reply, count) == (cleaned, dropped)


def test_sentences_carry_their_markers_wherever_the_model_put_them():
    text = "ISKP was founded in 2015 [1]. Its leader is Ghafari. [2][3]\nIt grew after 2021 [1, 2]. No citation here."
    sentences = cited_sentences(text)
    assert [s.citations for s in sentences] == [(1,), (2, 3), (1, 2), ()]
    assert [s.claim for s in sentences] == ["ISKP was founded in 2015.", "Its leader is Ghafari.",
                                            "It grew after 2021.", "No citation here."]
    for sentence in sentences:
        assert text[sentence.start:sentence.end] == sentence.text


def test_a_marker_alone_on_a_line_belongs_to_the_sentence_before():
    sentences = cited_sentences("ISKP was founded in 2015.\n[1]")
    assert len(sentences) == 1 and sentences[0].citations == (1,)


# --------------------------------------------------------------------------------------------- check


def test_facts_are_numbers_dates_and_names_but_not_sentence_openers():
    assert facts("As of 2022, ISKP’s leader is Sanaullah Ghafari, with 6,500 fighters.") == \
        ["2022", "iskp", "sanaullah", "ghafari", "6500"]
    assert facts("The group grew in March.") == ["march"]


@pytest.mark.parametrize("claim, supported", [
    ("ISKP was formed in 2015.", True),
    ("ISKP was formed in 2016.", False),  # a number the passage does not hold
    ("ISKP was formed in Kandahar.", False),  # a name it does not hold
    ("The group was formed in Nangarhar in 2015.", True),
])
def test_every_fact_must_occur_in_a_cited_passage(claim, supported):
    assert (not missing_facts(claim, [FOUNDED])) is supported
    assert is_supported(claim, [FOUNDED], None, 0.0) is supported


def test_a_sentence_citing_nothing_is_never_supported():
    assert not is_supported("ISKP was formed in 2015.", [], None, 0.0)


def test_the_cross_encoder_must_read_the_passage_as_saying_it():
    reranker = TermOverlapReranker()
    claim = "ISKP was formed in 2015."
    score = float(reranker.score(claim, [FOUNDED])[0])
    assert is_supported(claim, [FOUNDED], reranker, score)
    assert not is_supported(claim, [FOUNDED], reranker, score + 1e-3)


def test_check_reply_abstains_on_the_phrase_and_when_nothing_is_supported():
    passages = (FOUNDED, LEADER)
    assert check_reply(NO_ANSWER, passages, None, 0.0).abstained
    assert check_reply("I think: " + NO_ANSWER.lower(), passages, None, 0.0).text is None
    unsupported = check_reply("ISKP was formed in 1999 [1]. It is led by Ghafari.", passages, None, 0.0)
    assert unsupported.abstained and unsupported.text is None
    assert [s.supported for s in unsupported.sentences] == [False, False]
    mixed = check_reply("ISKP was formed in 2015 [1]. It is led by Ghafari [2]. It has 9,000 men [2].",
                        passages, None, 0.0)
    assert not mixed.abstained and [s.supported for s in mixed.sentences] == [True, True, False]


# -------------------------------------------------------------------------------------------- prompt


def test_the_prompt_numbers_passages_with_titles_within_the_budget():
    results = _results(FOUNDED, "word " * 40, LEADER)
    generator = WordGenerator()
    fixed = build_prompt("Who?", [], {}, generator, passages=5, budget=10_000).tokens
    budget = fixed + generator.count_tokens([f"[1] Founding\n{FOUNDED}"])[0] + \
        generator.count_tokens([f"[2] doc3.txt\n{LEADER}"])[0] + 4
    prompt = build_prompt("Who?", results, {"doc1.txt": "Founding"}, generator, passages=5, budget=budget)
    # The long second passage does not fit; the third still does, numbered 2.
    assert [c.passage_id for c in prompt.citations] == [0, 2]
    assert [c.n for c in prompt.citations] == [1, 2]
    assert prompt.tokens <= budget
    user = prompt.messages[-1].content
    assert "[1] Founding\n" + FOUNDED in user and "[2] doc3.txt\n" + LEADER in user and "Who?" in user
    assert NO_ANSWER in prompt.messages[0].content
    citation = build_prompt("Who?", results, {}, generator, passages=2, budget=10_000).citations[1]
    assert (citation.doc_id, citation.start, citation.end, citation.page) == ("doc2.txt", 20, 20 + len("word " * 40),
                                                                              2)


def test_a_budget_below_the_template_is_a_clear_error():
    with pytest.raises(GenerationError, match="ASKCORPUS_LLM_CONTEXT_TOKENS"):
        build_prompt("Who?", _results(FOUNDED), {}, WordGenerator(), passages=5, budget=5)


def test_the_template_is_a_file_the_user_can_replace(tmp_path):
    own = tmp_path / "prompt.txt"
    own.write_text("Be terse.\n---\nQ: $question\n$passages\n", encoding="utf-8")
    prompt = build_prompt("Who?", _results(FOUNDED), {}, WordGenerator(), passages=5, budget=1000, template=own)
    assert [m.role for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[0].content == "Be terse." and prompt.messages[1].content.startswith("Q: Who?\n[1] ")
    broken = tmp_path / "broken.txt"
    broken.write_text("Answer: $question", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\$passages"):
        load_template(broken)


# -------------------------------------------------------------------------------------------- writer


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(index=tmp_path, llm_url="http://127.0.0.1:9/v1", llm_context_tokens=1000)


def test_the_writer_streams_then_checks(settings):
    generator = WordGenerator("ISKP was formed in 2015 [1]. It is led by Ghafari [2][5].")
    seen: list[str] = []
    generated = write_answer("When?", _results(FOUNDED, LEADER), {}, generator, None, settings, on_text=seen.append)
    assert "".join(seen).strip() == generator.reply
    assert generated.text == "ISKP was formed in 2015 [1]. It is led by Ghafari [2]."
    assert generated.dropped_markers == 1 and not generated.abstained and generated.error is None
    assert [s.supported for s in generated.sentences] == [True, True]
    assert (generated.prompt_tokens, generated.completion_tokens, generated.model) == (11, 12, "words")
    for sentence in generated.sentences:
        assert generated.text[sentence.start:sentence.end] == sentence.text
    assert set(generated.timings) == {"prepare", "first_token", "check"}


def test_a_failing_model_costs_only_the_generated_answer(settings):
    generated = write_answer("When?", _results(FOUNDED), {}, WordGenerator("a b c d", fail="endpoint down"), None,
                             settings)
    assert generated.text is None and generated.error == "endpoint down" and generated.reply == "a b "


def test_stopping_closes_the_model_stream(settings):
    generator = WordGenerator("one two three four five six seven")
    pieces: list[str] = []
    generated = write_answer("When?", _results(FOUNDED), {}, generator, None, settings, on_text=pieces.append,
                             stopped=lambda: len(pieces) >= 2)
    assert generated.error == STOPPED and generator.closed_after == 2


def test_no_results_abstain_without_asking_the_model(settings):
    generator = WordGenerator("anything")
    generated = write_answer("When?", [], {}, generator, None, settings)
    assert generated.abstained and generated.text is None and generator.messages == []


def test_a_number_opening_the_next_line_cites_that_line():
    sentences = cited_sentences("ISKP grew fast.\n\n[2] It recruits online.")
    assert [(s.claim, s.citations) for s in sentences] == [("ISKP grew fast.", ()), ("It recruits online.", (2,))]
