"""Scoring a corpus in the BEIR layout: documents ranked by their best passage, nDCG@10 and Recall@100.

A BEIR folder holds `corpus.jsonl` ({"_id", "title", "text"} per line), `queries.jsonl` ({"_id", "text"}) and
`qrels/test.tsv` (query-id, corpus-id, score; a header line). Relevance is per document, graded by the score.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote, unquote

from ..config import Settings
from ..errors import AskcorpusError, ConfigError
from ..records import Candidates

NDCG_CUTOFF = 10
RECALL_CUTOFF = 100
# Passages fetched per query: enough that the top RECALL_CUTOFF documents are found even when some
# documents fill several of the first places.
PASSAGE_DEPTH = 1000


class BeirFormatError(AskcorpusError):
    """A BEIR folder is missing a file or holds a line askcorpus cannot read."""


@dataclass(frozen=True)
class BeirSet:
    """A BEIR data set read into memory."""

    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> graded relevance


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise BeirFormatError(f"{path} is missing (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BeirFormatError(f"{path} line {number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict) or not isinstance(record.get("_id"), (str, int)):
            raise BeirFormatError(f"{path} line {number}: needs an object with an \"_id\"")
        rows.append((number, record))
    return rows


def load_beir(folder: Path, split: str = "test") -> BeirSet:
    """Read a BEIR folder; only queries with at least one relevant document in `qrels/<split>.tsv` are kept."""
    folder = Path(folder)
    corpus = {str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
              for _, r in _jsonl(folder / "corpus.jsonl")}
    queries = {str(r["_id"]): str(r.get("text") or "") for _, r in _jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise BeirFormatError(f"{qrels_path} is missing")
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for number, line in enumerate(qrels_path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.strip().split("\t")
        if not line.strip() or (number == 1 and not fields[-1].lstrip("-").isdigit()):
            continue  # the header line
        if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
            raise BeirFormatError(f"{qrels_path} line {number}: expected query-id<TAB>corpus-id<TAB>score")
        query_id, doc_id, score = fields[0], fields[1], int(fields[2])
        if query_id not in queries:
            raise BeirFormatError(f"{qrels_path} line {number}: query {query_id!r} is not in queries.jsonl")
        if doc_id not in corpus:
            raise BeirFormatError(f"{qrels_path} line {number}: document {doc_id!r} is not in corpus.jsonl")
        qrels[query_id][doc_id] = score
    kept = {q: docs for q, docs in qrels.items() if any(score > 0 for score in docs.values())}
    if not kept:
        raise BeirFormatError(f"{qrels_path} has no query with a relevant document")
    return BeirSet(corpus=corpus, queries={q: queries[q] for q in kept}, qrels=dict(kept))


def file_name(doc_id: str) -> str:
    """A BEIR document id as a file name in the materialised corpus folder (and back: `doc_id_of`)."""
    return quote(doc_id, safe="") + ".txt"


def doc_id_of(file: str) -> str:
    return unquote(file[: -len(".txt")])


def write_corpus(beir: BeirSet, folder: Path) -> None:
    """Each BEIR document as a text file (title line, blank line, text); unchanged files are left alone so
    the incremental build embeds only what changed."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {file_name(doc_id) for doc_id in beir.corpus}
    for stale in folder.glob("*.txt"):
        if stale.name not in wanted:
            stale.unlink()
    for doc_id, (title, text) in beir.corpus.items():
        body = f"{title}\n\n{text}" if title.strip() else text
        path = folder / file_name(doc_id)
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")


def beir_settings(settings: Settings, folder: Path) -> Settings:
    """Settings whose corpus and index live in `<index>/beir/<folder name>`; the encoder export is shared."""
    home = settings.index / "beir" / re.sub(r"[^\w.-]+", "_", Path(folder).resolve().name)
    return settings.with_overrides(corpus=home / "corpus", index=home / "index",
                                   encoder_cache=settings.encoder_cache_dir)


def rank_documents(passage_doc_ids: Sequence[str], limit: int = RECALL_CUTOFF) -> list[str]:
    """Documents in the order of their best passage."""
    return list(dict.fromkeys(passage_doc_ids))[:limit]


def ndcg(ranked: Sequence[str], relevance: dict[str, int], cutoff: int = NDCG_CUTOFF) -> float:
    """nDCG@cutoff with the graded relevance as the gain (as BEIR's pytrec_eval computes it)."""
    dcg = sum(relevance.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:cutoff], start=1))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:cutoff]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg else 0.0


def recall(ranked: Sequence[str], relevance: dict[str, int], cutoff: int = RECALL_CUTOFF) -> float:
    relevant = {doc for doc, g in relevance.items() if g > 0}
    return len(relevant & set(ranked[:cutoff])) / len(relevant)


def evaluate_beir(searcher: Any, beir: BeirSet, modes: Sequence[str]) -> dict[str, dict[str, float]]:
    """nDCG@10 and Recall@100 per mode ("hybrid", "bm25+rerank", ...), means over the queries."""
    from .suite import split_mode

    passages = searcher.index.passages
    depth = min(PASSAGE_DEPTH, len(passages))
    if searcher.reranker is None and any(split_mode(mode)[1] for mode in modes):
        raise ConfigError("a +rerank mode was asked for, but reranking is off (ASKCORPUS_RERANK=false or --no-rerank)")
    scores: dict[str, dict[str, list[float]]] = {m: {"ndcg@10": [], "recall@100": []} for m in modes}
    for query_id, query in beir.queries.items():
        vector = searcher.encode_queries([query])[0]
        for mode in modes:
            base, reranked = split_mode(mode)
            hits = searcher.retrieve(query, depth, base, vector)
            if reranked:  # the searcher's own rerank stage, over the deeper list documents are ranked from
                hits = searcher.rerank(Candidates(query, base, depth, tuple(hits), vector, reranking=True))
            ranked = rank_documents([doc_id_of(passages[hit.passage_id].doc_id) for hit in hits])
            scores[mode]["ndcg@10"].append(ndcg(ranked, beir.qrels[query_id]))
            scores[mode]["recall@100"].append(recall(ranked, beir.qrels[query_id]))
    return {mode: {name: sum(values) / len(values) for name, values in metrics.items()}
            for mode, metrics in scores.items()}


def format_beir(results: dict[str, dict[str, float]], folder: Path, queries: int, documents: int) -> str:
    lines = [f"BEIR {Path(folder).name}: {queries} queries, {documents} documents (document = its best passage)",
             "", f"{'mode':<16} {'nDCG@10':>8} {'R@100':>8}"]
    lines += [f"{mode:<16} {m['ndcg@10']:>8.3f} {m['recall@100']:>8.3f}" for mode, m in results.items()]
    return "\n".join(lines) + "\n"
