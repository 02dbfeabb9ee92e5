"""Benchmark of the template's loader, index builds and search, on a fresh database.

    poetry run python -m benchmarks.bench                 # 100,000 x 384: about 20 minutes
    poetry run python -m benchmarks.bench --only load     # the loader and its bounds alone
    poetry run python -m benchmarks.bench --only query    # latency, recall and throughput alone

On one table ``item (id bigint primary key, category int, embedding vector(dim))``, one module
per part:

* load (:mod:`.load`): the same rows by the template's loader given numpy column batches, numpy
  rows and Python lists (column batches and lists through psycopg 3 too), against two bounds that
  have no client: the server's own ``COPY ... FROM '<file>' (FORMAT binary)`` of the same rows
  (what any COPY client could reach), and ``INSERT ... SELECT`` from a table that holds them (no
  receive functions either). ORM ``add_all``, executemany and text COPY load a sample for context;
* build (:mod:`.build`): the HNSW index (cosine, m = 16, ef_construction = 64) with the server's
  defaults, with :class:`~pgvector_base.loading.BuildSettings`, and through ``alembic upgrade``
  with the settings :mod:`pgvector_base.migration.builds` gives migrations;
* query (:mod:`.query`, :mod:`.throughput`): k nearest neighbours through
  :class:`~pgvector_base.search.VectorSearch` (the application engine, psycopg 3): an exact scan,
  then the index at several ``hnsw.ef_search``, with latency, the server's execution time and
  recall@k; a filter that 10% of the rows match, without and with iterative scans; one query's
  time taken apart; then throughput from N = 1, 2, 4, 8 client processes for a fixed time against
  ``pgbench`` running the same SQL with the same query vectors;
* async (:mod:`.async_throughput`): N = 1, 4, 16 asyncio tasks in one process, a session per
  request through :class:`~pgvector_base.aio.AsyncVectorSearch`, against raw async psycopg running
  the same SQL (the template's own cost) and pgbench in its prepared, extended and simple modes;
* prepared (:mod:`.prepared`): server-side prepared statements off and on, in the
  session-per-request pattern;
* hybrid (:mod:`.hybrid`, :mod:`.datasets`): :class:`~pgvector_base.search.HybridSearch` beside
  ``VectorSearch`` on a table of short documents with GloVe word vectors (or synthetic ones);
* replica (:mod:`.replica`, :mod:`.cluster`): searches marked as replica reads on a primary alone
  and routed to its streaming replica, on 20,000 rows;
* backfill (:mod:`.backfill`): :func:`~pgvector_base.backfill.backfill` filling a new embedding
  column with a free embed function, against the server's ``UPDATE ... FROM`` a table holding the
  same vectors, batch for batch; and a reader's p99 during a backfill over before it;
* startup (:mod:`.startup`): ``alembic current`` in the template against stock Alembic's;
* quantized (:mod:`.quantized`): the vector HNSW index, a halfvec expression index and binary
  quantization re-ranked at 2, 4 and 8 times oversampling: size, build time, p50 and recall@k by
  :func:`~pgvector_base.search.measure_recall`, on a table of their own;
* tenants (:mod:`.tenants`): searches for tenants of 0.1%, 1%, 10% and 50% of the rows, served
  by the shared index (plain, with strict and relaxed iterative scans), by the tenant's own
  partition and by an exact scan: p50 and recall@k against the exact answer among its rows;
* scaling (:mod:`.scaling`): loading, building and a query at five table sizes, from a tenth of
  ``--rows`` to twice it.

Every figure is the median of ``--repeats`` runs (at least 3) with their min and max; methods take
turns, so whatever else the machine does slows them alike. Goals pass on the median. Results go
to ``results.md``, ``results.json`` and two charts next to this package (``--only`` prints them
and writes nothing, unless ``--output`` names a directory); the exit status is 1 if a goal is
missed. :mod:`.report` writes them.
"""
