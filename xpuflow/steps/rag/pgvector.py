"""The scale-out engine of ``index``: PostgreSQL with pgvector, a server shared by every reader.

The index step loads the chunks and their vectors into a *staging* table with ``COPY ... (FORMAT
BINARY)``, builds the vector index there, runs the recall gate against it through SQL, and only
then publishes it: in one transaction the previous table is dropped and the staging table (with
its index) renamed into place. Readers see the old index or the new one, never a half-loaded
table; a failed gate or a crash leaves the published table as it was (the staging table is
dropped, or by the next run). A session advisory lock keyed on the table name stops two runs from
publishing the same table at once. The table and the step's output directory are switched one
after the other, so each publish stamps the table (its comment) with a new generation, also recorded
in ``index.json``; :func:`nearest` refuses a table whose generation is not its output's (a later run
replaced the table, or a run was killed between the two switches).

Table ``<table>``: ``row`` (bigint, primary key: the position in the embed output), ``chunk_id``
(unique), ``doc_id``, ``n``, ``start``, ``end``, ``text``, ``source``, ``embedding vector(dim)``.
Distance: negative inner product (``<#>``, ``vector_ip_ops``) on L2-normalised vectors, i.e. cosine.
``kind``: ``flat`` (no ANN index: exact scan), ``hnsw`` (m=16, ef_construction=64,
``hnsw.ef_search``), ``ivf`` (``ivfflat`` with ``lists`` = sqrt(n) clusters, ``ivfflat.probes``).

The connection string comes from ``dsn`` or the ``XPUFLOW_PGVECTOR_DSN`` environment variable (in a
cluster: from a Kubernetes Secret, so it is neither in the pipeline spec nor in the outputs); the
password never appears in ``index.json`` or the logs.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Any

from ...errors import invalid
from ..io import StepError

__all__ = ["DSN_ENV", "PgvectorIndex", "connect", "redact", "check_table", "nearest"]

log = logging.getLogger("xpuflow.index")
DSN_ENV = "XPUFLOW_PGVECTOR_DSN"
GENERATION = "xpuflow index run "  # the published table's comment: this, then the run's generation
_TABLE = re.compile(r"(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,40}")
_COLUMNS = ("chunk_id", "doc_id", "n", "start", "end", "text", "source")


def check_table(table: str) -> None:
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise StepError(invalid("table", table, "a lower-case SQL name, optionally schema-qualified (schema.table)",
                                where="index", fix="e.g. 'rag_chunks' or 'search.rag_chunks'"))


def redact(dsn: str) -> str:
    """``dsn`` without its password (URL or key=value form)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable connection string>"
    parts.pop("password", None)
    return make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def _one_line(error: Exception, dsn: str) -> str:
    """The error on one line, with the connection string's password replaced by ``***`` wherever it appears."""
    from psycopg.conninfo import conninfo_to_dict

    text = " ".join(str(error).split()).rstrip(".")
    password = conninfo_to_dict(dsn).get("password")
    return text.replace(password, "***") if password else text


def connect(dsn: str, who: str = "index") -> Any:
    """An autocommit connection with the pgvector types registered; clear errors for the usual failures."""
    try:
        import psycopg
        import psycopg.conninfo
        from pgvector.psycopg import register_vector
    except ImportError as e:
        raise StepError(f"{who}: engine='pgvector' needs psycopg and pgvector ({e.name} is missing). "
                        "Fix: pip install 'xpuflow[pgvector]'.") from None
    dsn = dsn or os.environ.get(DSN_ENV, "")
    if not dsn:
        raise StepError(invalid("dsn", dsn, f"a PostgreSQL connection string (or set {DSN_ENV})", where=who,
                                fix="e.g. postgresql://user@host:5432/db; in a cluster, mount it from a Secret "
                                    f"as {DSN_ENV}"))
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:  # libpq's message quotes the string, password included: not shown
        raise StepError(f"{who}: dsn is not a valid PostgreSQL connection string (not shown: it may hold a password). "
                        "Fix: use a URL postgresql://user:password@host:5432/dbname or key=value pairs such as "
                        f"'host=db port=5432 dbname=rag user=indexer', in --dsn or {DSN_ENV}.") from None
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise StepError(f"{who}: cannot connect to PostgreSQL at {redact(dsn)}: {_one_line(e, dsn)}. Fix: check the "
                        "host, port, database, user and password, and that the server accepts connections.") from None
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as e:
        conn.close()
        raise StepError(f"{who}: the pgvector extension is not available in {redact(dsn)} ({_one_line(e, dsn)}). "
                        "Fix: install pgvector on the server and run CREATE EXTENSION vector as a superuser "
                        "(or the database owner).") from None
    register_vector(conn)
    return conn


class PgvectorIndex:
    """A staging table built from the vectors; ``search`` for the gate, then ``publish`` or ``discard``."""

    def __init__(self, dsn: str, table: str, kind: str, ef_search: int, nprobe: int) -> None:
        from psycopg import sql

        check_table(table)
        self.conn = connect(dsn)
        self.dsn = redact(dsn or os.environ.get(DSN_ENV, ""))
        self.table, self.kind, self.ef_search, self.nprobe = table, kind, ef_search, nprobe
        schema, _, name = table.rpartition(".")
        self.schema, self.name = schema, name
        self.final = sql.Identifier(*(p for p in (schema, name) if p))
        self.staging = sql.Identifier(*(p for p in (schema, f"{name}__xpuflow_staging") if p))
        self.index_name, self.staging_index = f"{name}_embedding_idx", f"{name}__xpuflow_staging_idx"
        lock = self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"xpuflow.index:{table}",))
        if not lock.fetchone()[0]:
            self.conn.close()
            raise StepError(f"index: another run is building table {table!r} in {self.dsn} right now. Fix: wait for "
                            "it, or write to another --table.")
        self.params: dict[str, Any] = {"engine": "pgvector", "table": table}

    def build(self, chunks: Any, vectors: Any) -> None:
        from psycopg import sql

        n, dim = vectors.shape
        conn = self.conn
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.staging))  # left by a crashed run
        conn.execute(sql.SQL("CREATE TABLE {} (row bigint PRIMARY KEY, chunk_id text NOT NULL UNIQUE, doc_id text, "
                             "n integer, start bigint, \"end\" bigint, text text, source text, embedding vector({}) "
                             "NOT NULL)").format(self.staging, sql.Literal(dim)))
        columns = {c: chunks.column(c).to_pylist() for c in _COLUMNS}
        copy_sql = sql.SQL("COPY {} (row, chunk_id, doc_id, n, start, \"end\", text, source, embedding) FROM STDIN "
                           "WITH (FORMAT BINARY)").format(self.staging)
        with conn.cursor().copy(copy_sql) as copy:
            copy.set_types(["bigint", "text", "text", "integer", "bigint", "bigint", "text", "text", "vector"])
            for i in range(n):
                copy.write_row((i, *(columns[c][i] for c in _COLUMNS), vectors[i]))
        index = sql.Identifier(self.staging_index)
        if self.kind == "hnsw":
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) "
                                 "WITH (m = 16, ef_construction = 64)").format(index, self.staging))
            self.params.update({"pgvector_index": "hnsw", "m": 16, "ef_construction": 64, "ef_search": self.ef_search})
        elif self.kind == "ivf":
            lists = max(1, int(n**0.5))
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING ivfflat (embedding vector_ip_ops) WITH (lists = {})")
                         .format(index, self.staging, sql.Literal(lists)))
            self.nprobe = min(self.nprobe, lists)
            self.params.update({"pgvector_index": "ivfflat", "lists": lists, "probes": self.nprobe})
        else:
            self.params.update({"pgvector_index": None, "search": "exact (sequential scan)"})
        conn.execute(sql.SQL("ANALYZE {}").format(self.staging))
        versions = conn.execute("SELECT current_setting('server_version'), "
                                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')").fetchone()
        self.params.update({"postgresql": versions[0], "pgvector": versions[1]})

    def search(self, queries: Any, k: int) -> Any:
        """Rows of the ``k`` nearest vectors of each query, [len(queries), k] (-1 where fewer exist)."""
        import numpy as np
        from psycopg import sql

        found = np.full((len(queries), k), -1, dtype=np.int64)
        statement = sql.SQL("SELECT row FROM {} ORDER BY embedding <#> %s LIMIT %s").format(self.staging)
        with self.conn.transaction(), self.conn.cursor() as cur:
            _settings(cur, self.params)
            for i, q in enumerate(queries):
                rows = [r[0] for r in cur.execute(statement, (q, k), prepare=True).fetchall()]
                found[i, :len(rows)] = rows
        return found

    def publish(self, out: Any = None, chunks: Any = None) -> dict[str, str]:
        """Replace ``table`` by the staging table, atomically for readers; no files in ``out`` (the table is the
        index, and holds ``chunks``)."""
        from psycopg import sql

        generation = uuid.uuid4().hex  # also in the index output: a reader checks both name the same run
        with self.conn.transaction():
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.final))
            self.conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.staging, sql.Identifier(self.name)))
            if self.kind in ("hnsw", "ivf"):
                old = sql.Identifier(*(p for p in (self.schema, self.staging_index) if p))
                self.conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(old, sql.Identifier(self.index_name)))
            self.conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(self.final,
                                                                         sql.Literal(GENERATION + generation)))
        self.params["generation"] = generation
        log.info("index: published table %s in %s", self.table, self.dsn)
        return {}

    def discard(self) -> None:
        from psycopg import sql

        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.staging))

    def close(self) -> None:
        self.conn.close()  # ends the session: its advisory lock is released


def _settings(cur: Any, params: dict[str, Any]) -> None:
    """This transaction's search settings: ef_search for HNSW, probes for ivfflat."""
    cur.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true)",
                (str(params.get("ef_search", 40)), str(params.get("probes", 1))))


def nearest(dsn: str, table: str, params: dict[str, Any], vectors: Any, k: int) -> list[list[dict]]:
    """The ``k`` nearest rows of ``table`` for each vector: [{chunk_id, doc_id, score, text}, ...]."""
    from psycopg import sql

    check_table(table)
    statement = sql.SQL("SELECT chunk_id, doc_id, text, -(embedding <#> %s) AS score FROM {} "
                        "ORDER BY embedding <#> %s LIMIT %s").format(sql.Identifier(*table.split(".")))
    conn = connect(dsn, who="search")
    try:
        with conn.transaction(), conn.cursor() as cur:
            _check_generation(cur, table, params.get("generation"), redact(dsn or os.environ.get(DSN_ENV, "")))
            _settings(cur, params)
            return [[{"chunk_id": c, "doc_id": d, "text": t, "score": float(score)}
                     for c, d, t, score in cur.execute(statement, (v, v, k), prepare=True).fetchall()]
                    for v in vectors]
    finally:
        conn.close()


def _check_generation(cur: Any, table: str, expected: str | None, where: str) -> None:
    """Refuse a table that another index run replaced since this index output was written (the output and the
    table are switched one after the other, so a run killed between them, or a later run into the same table,
    leaves an output describing another table's content)."""
    if expected is None:  # an index output written before generations were recorded
        return
    found = cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (table,)).fetchone()[0] or ""
    if found != GENERATION + expected:
        now = found.removeprefix(GENERATION) if found.startswith(GENERATION) else "none"
        raise StepError(f"search: table {table!r} in {where} is from another index run (generation {now}) than this "
                        f"index output (generation {expected}): a later run replaced the table, or a run was stopped "
                        "between switching the table and its output. Fix: rerun the index step, or search the output "
                        "of the run that wrote the table.")
