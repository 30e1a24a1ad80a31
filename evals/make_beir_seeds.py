"""Writes evals/beir-seeds: the seeds and the test questions of evals/qa.jsonl in the BEIR layout.

Each paragraph of a seed (text between blank lines) is a BEIR document, titled with its article's title; a
question's relevant documents are the paragraphs its evidence spans overlap. Run from the repository root:
`python evals/make_beir_seeds.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from askcorpus.evaluate import load_qa
from askcorpus.ingest import load_corpus

OUT = Path("evals/beir-seeds")


def main() -> None:
    documents, _ = load_corpus(Path("seeds"))
    paragraphs: list[tuple[str, str, str, int, int]] = []  # (id, title, text, start, end)
    for document in documents:
        stem = document.doc_id.split("_")[0]
        for number, match in enumerate(re.finditer(r"\S(?:.*\S)?(?:\n(?!\s*\n).*\S)*", document.text)):
            paragraphs.append((f"{stem}-p{number:03d}", document.title, match.group(0), match.start(), match.end()))
    by_doc = {d.doc_id: [p for p in paragraphs if p[0].startswith(d.doc_id.split("_")[0] + "-")] for d in documents}
    queries, qrels = [], []
    for item in load_qa(Path("evals/qa.jsonl"), split="test"):
        relevant = sorted({p[0] for span in item.evidence for p in by_doc[span.doc_id]
                           if p[3] < span.end and span.start < p[4]})
        if relevant:
            queries.append({"_id": item.id, "text": item.question})
            qrels.extend(f"{item.id}\t{doc}\t1\n" for doc in relevant)
    (OUT / "qrels").mkdir(parents=True, exist_ok=True)
    (OUT / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}, ensure_ascii=False) + "\n" for i, t, x, _, _ in paragraphs),
        encoding="utf-8")
    (OUT / "queries.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries),
                                       encoding="utf-8")
    (OUT / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels), encoding="utf-8")
    print(f"{len(paragraphs)} documents, {len(queries)} queries, {len(qrels)} judgements -> {OUT}")


if __name__ == "__main__":
    main()
