"""k-NN search through the ORM: every helper's query is served by the index, settings stay local.

The plans are PostgreSQL's own choice on realistic tables (a few thousand analyzed rows, no
``enable_seqscan = off``): each test runs a helper, captures the SQL it sent, and EXPLAINs it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR
from sqlalchemy import BigInteger, Engine, Index, String, Text, create_engine, event, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.database import DatabaseConfigError
from pgvector_base.loading import load
from pgvector_base.search import Distance, NoIndexError, SearchSettings, VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine, session_factory
from tests.conftest import CreateDatabase

from .plans import plan

PRODUCTS = 2000
EMBEDDING_DIM = 384
ITEMS = 5000
ITEM_DIM = 16


class SearchBase(DeclarativeBase):
    """Test-only models: several indexes, types and access methods on small vectors."""


class Product(SearchBase):
    """A typical searched table: text, and an embedding with a cosine HNSW index."""

    __tablename__ = "search_product"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float] | None] = mapped_column(VECTOR(EMBEDDING_DIM))

    __table_args__ = (
        Index(
            "ix_search_product_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class Item(SearchBase):
    """One vector column with a cosine HNSW and an L2 IVFFlat index, and a halfvec column."""

    __tablename__ = "search_item"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    embedding: Mapped[list[float]] = mapped_column(VECTOR(ITEM_DIM))
    half: Mapped[list[float]] = mapped_column(HALFVEC(ITEM_DIM))
    plain: Mapped[list[float]] = mapped_column(VECTOR(ITEM_DIM))

    __table_args__ = (
        Index(
            "ix_search_item_cosine",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index(
            "ix_search_item_l2",
            "embedding",
            postgresql_using="ivfflat",
            postgresql_with={"lists": 20},
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
        Index(
            "ix_search_item_half",
            "half",
            postgresql_using="hnsw",
            postgresql_ops={"half": "halfvec_l2_ops"},
        ),
    )


@pytest.fixture(scope="module")
def database_url(create_database: CreateDatabase) -> URL:
    """The module's own database, with the vector extension."""
    url = create_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def engine(database_url: URL) -> Iterator[Engine]:
    """The module's database, with products and items loaded and analyzed."""
    engine = create_app_engine(database_url)
    rng = np.random.default_rng(6)
    products = rng.standard_normal((PRODUCTS, EMBEDDING_DIM), dtype=np.float32).tolist()
    items = rng.random((ITEMS, ITEM_DIM), dtype=np.float32).tolist()
    SearchBase.metadata.create_all(engine)
    with engine.begin() as connection:
        load(
            connection,
            SearchBase.metadata.tables["search_product"],
            ((i, f"product {i}", "", vector) for i, vector in enumerate(products, 1)),
        )
        load(
            connection,
            SearchBase.metadata.tables["search_item"],
            ((i, i % 10, vector, vector, vector) for i, vector in enumerate(items, 1)),
        )
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on the module's database."""
    with session_factory(engine)() as session:
        yield session


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def stored(session: Session, column: Any, key: int) -> list[float]:
    """The vector of one row, to search with."""
    return list(session.execute(select(column).where(column.class_.id == key)).scalar_one())


def test_nearest_uses_the_index(engine: Engine, session: Session) -> None:
    search = VectorSearch(Product, Product.embedding)
    query = stored(session, Product.embedding, 7)
    assert "Index Scan using ix_search_product_embedding" in plan(
        engine, lambda: search.nearest(session, query, 10)
    )


def test_neighbors_of_uses_the_index(engine: Engine, session: Session) -> None:
    search = VectorSearch(Product, Product.embedding)
    assert "Index Scan using ix_search_product_embedding" in plan(
        engine, lambda: search.neighbors_of(session, 7, 10)
    )


@pytest.mark.parametrize(
    ("attribute", "distance", "index"),
    [
        (Item.embedding, Distance.COSINE, "ix_search_item_cosine"),
        (Item.embedding, Distance.L2, "ix_search_item_l2"),
        (Item.half, None, "ix_search_item_half"),
    ],
)
def test_filtered_searches_use_the_index_of_their_distance(
    engine: Engine, session: Session, attribute: Any, distance: Distance | None, index: str
) -> None:
    """A 10% filter, each distance on its own index: the planner still picks the index."""
    search = VectorSearch(Item, attribute, distance)
    settings = (
        SearchSettings(probes=5, iterative_scan="relaxed_order")
        if search.index.method == "ivfflat"
        else SearchSettings(ef_search=60, iterative_scan="strict_order")
    )
    where = [Item.category == 3]
    query = stored(session, attribute, 11)
    assert f"Index Scan using {index}" in plan(
        engine, lambda: search.nearest(session, query, 10, where=where, settings=settings)
    )
    assert f"Index Scan using {index}" in plan(
        engine, lambda: search.neighbors_of(session, 11, 10, where=where, settings=settings)
    )
    results = search.nearest(session, query, 10, where=where, settings=settings)
    assert len(results) == 10
    assert all(neighbor.item.category == 3 for neighbor in results)


def test_a_distance_no_index_serves_is_refused() -> None:
    with pytest.raises(NoIndexError) as refused:
        VectorSearch(Product, Product.embedding, Distance.L2)
    assert str(refused.value) == (
        "no index on Product.embedding serves l2 distance (<->), so the query would scan the "
        "whole table; its indexes: ix_search_product_embedding (hnsw, cosine <=>)"
    )


def test_a_column_with_indexes_for_several_distances_needs_a_choice() -> None:
    with pytest.raises(NoIndexError, match=r"several distances .* pass distance= to choose one"):
        VectorSearch(Item, Item.embedding)


def test_a_column_without_a_vector_index_is_refused() -> None:
    with pytest.raises(NoIndexError, match=r"Item\.plain has no HNSW or IVFFlat index"):
        VectorSearch(Item, Item.plain)


def test_results_are_nearest_first_with_similarity_from_the_distance(session: Session) -> None:
    search = VectorSearch(Product, Product.embedding)
    results = search.nearest(session, stored(session, Product.embedding, 7), 5)

    assert results[0].item.id == 7
    assert results[0].distance == pytest.approx(0, abs=1e-6)
    assert [n.distance for n in results] == sorted(n.distance for n in results)
    assert all(n.similarity == pytest.approx(1 - n.distance) for n in results)
    assert [n.item.id for n in search.neighbors_of(session, 7, 4)] == [
        n.item.id for n in results[1:]
    ]


def test_settings_apply_to_the_query(session: Session) -> None:
    """HNSW returns at most ef_search rows unless iterative scans go on looking."""
    search = VectorSearch(Product, Product.embedding)
    query = stored(session, Product.embedding, 7)

    assert len(search.nearest(session, query, 10, settings=SearchSettings(ef_search=4))) == 4
    iterative = SearchSettings(ef_search=4, iterative_scan="relaxed_order")
    assert len(search.nearest(session, query, 10, settings=iterative)) == 10


def test_settings_reach_neither_the_transaction_nor_the_next_checkout(
    database_url: URL,
) -> None:
    engine = create_app_engine(database_url, EngineSettings(pool_size=1, max_overflow=0))
    sessions = session_factory(engine)
    search = VectorSearch(Product, Product.embedding)
    settings = SearchSettings(ef_search=4, max_scan_tuples=100, iterative_scan="strict_order")
    current = text(
        "SELECT pg_backend_pid(), current_setting('hnsw.ef_search'), "
        "current_setting('hnsw.max_scan_tuples'), current_setting('hnsw.iterative_scan')"
    )
    try:
        with sessions() as session:
            search.nearest(session, stored(session, Product.embedding, 7), 10, settings=settings)
            backend, *in_transaction = session.execute(current).one()
        with sessions() as session:
            next_backend, *next_checkout = session.execute(current).one()
    finally:
        engine.dispose()

    assert next_backend == backend
    assert in_transaction == next_checkout == ["40", "20000", "off"]


def test_configured_settings_last_until_the_transaction_ends(session: Session) -> None:
    search = VectorSearch(Product, Product.embedding)
    query = stored(session, Product.embedding, 7)
    ef_search = text("SELECT current_setting('hnsw.ef_search')")

    search.configure(session, SearchSettings(ef_search=4))
    assert len(search.nearest(session, query, 10)) == 4
    assert len(search.nearest(session, query, 10)) == 4
    session.rollback()
    assert session.scalar(ef_search) == "40"
    assert len(search.nearest(session, query, 10)) == 10


def test_pending_changes_survive_a_search_with_settings(engine: Engine, session: Session) -> None:
    """The savepoint that scopes the settings must not roll back the session's own work."""
    search = VectorSearch(Product, Product.embedding)
    session.add(Product(id=PRODUCTS + 1, name="new", description="", embedding=None))
    search.nearest(
        session, stored(session, Product.embedding, 7), 3, settings=SearchSettings(ef_search=10)
    )
    session.commit()
    try:
        with session_factory(engine)() as other:
            assert other.get(Product, PRODUCTS + 1) is not None
    finally:
        session.delete(session.get(Product, PRODUCTS + 1))
        session.commit()


def found_keys(
    search: VectorSearch[Product],
    session: Session,
    method: str,
    query: list[float],
    settings: SearchSettings | None,
) -> list[int]:
    """The keys ``method`` finds for ``query`` (``neighbors_of`` for row 7, whose vector it is)."""
    if method == "nearest_keys":
        return [key for key, _ in search.nearest_keys(session, query, 3, settings=settings)]
    if method == "neighbors_of":
        return [hit.item.id for hit in search.neighbors_of(session, 7, 3, settings=settings)]
    return [hit.item.id for hit in search.nearest(session, query, 3, settings=settings)]


@pytest.mark.parametrize("autoflush", [True, False])
@pytest.mark.parametrize("settings", [None, SearchSettings(ef_search=100)])
@pytest.mark.parametrize("method", ["nearest", "nearest_keys", "neighbors_of"])
def test_searches_see_pending_changes_exactly_as_session_execute_does(
    session: Session, method: str, settings: SearchSettings | None, autoflush: bool
) -> None:
    """A row added a moment ago at row 7's vector is the nearest when the session autoflushes,
    and stays pending and unseen when it does not, as a plain session.execute would see it."""
    search = VectorSearch(Product, Product.embedding)
    vector = stored(session, Product.embedding, 7)
    added = Product(id=PRODUCTS + 7, name="pending", description="", embedding=vector)
    session.add(added)
    session.autoflush = autoflush
    found = found_keys(search, session, method, vector, settings)
    visible = session.execute(
        text("SELECT count(*) FROM search_product WHERE id = :id"), {"id": added.id}
    )
    assert (found[0] == added.id) is autoflush
    assert (visible.scalar_one() == 1) is autoflush
    assert (added in session.new) is not autoflush


def test_a_query_of_the_wrong_size_is_refused(session: Session) -> None:
    search = VectorSearch(Product, Product.embedding)
    with pytest.raises(ValueError, match=r"the query vector has 3 dimensions; .* has 384"):
        search.nearest(session, [1.0, 2.0, 3.0])


def test_a_missing_row_has_no_neighbors(session: Session) -> None:
    search = VectorSearch(Product, Product.embedding)
    with pytest.raises(LookupError, match="no Product with id=0 and a vector"):
        search.neighbors_of(session, 0)


@pytest.mark.parametrize(
    ("distance", "settings", "message"),
    [
        (Distance.COSINE, SearchSettings(probes=3), r"probes do not apply to .* an hnsw index"),
        (Distance.L2, SearchSettings(ef_search=80), r"ef_search do not apply to .* ivfflat index"),
        (
            Distance.L2,
            SearchSettings(iterative_scan="strict_order"),
            "iterative scans are relaxed_order only",
        ),
    ],
)
def test_settings_the_index_would_ignore_are_refused(
    distance: Distance, settings: SearchSettings, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        settings.parameters(VectorSearch(Item, Item.embedding, distance).index)


def test_an_unknown_iterative_scan_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="iterative_scan must be one of off, relaxed_order"):
        SearchSettings(iterative_scan="relaxed")  # type: ignore[arg-type]


def test_pool_settings_come_from_the_environment() -> None:
    settings = EngineSettings.from_env({"DATABASE_POOL_SIZE": "2", "DATABASE_MAX_OVERFLOW": "0"})
    assert settings == EngineSettings(pool_size=2, max_overflow=0)
    with pytest.raises(DatabaseConfigError, match="DATABASE_MAX_OVERFLOW must be a whole number"):
        EngineSettings.from_env({"DATABASE_MAX_OVERFLOW": "-1"})


def sent_query(engine: Engine, run: Callable[[], object]) -> Any:
    """The query vector parameter of the k-NN statement that ``run`` sends."""
    sent: list[Any] = []

    def capture(*args: Any) -> None:
        if "ORDER BY" in args[2]:
            sent.append(args[3]["query"])

    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (query,) = sent
    return query


def test_both_drivers_find_the_same_neighbors_psycopg3_sending_binary(
    engine: Engine, database_url: URL
) -> None:
    """psycopg 3 sends pgvector's binary format (as pgvector-python encodes it), psycopg2 text;
    the server reads both as the same vector. A numpy query is taken as it is."""
    search = VectorSearch(Product, Product.embedding)
    text_engine = create_app_engine(database_url, EngineSettings(driver="psycopg2"))
    try:
        with session_factory(engine)() as binary, session_factory(text_engine)() as textual:
            query = np.asarray(stored(binary, Product.embedding, 7), dtype=np.float32)
            sent = sent_query(engine, lambda: search.nearest(binary, query, 10))
            by_binary = search.nearest(binary, query, 10)
            by_text = search.nearest(textual, query.tolist(), 10)
            plan_text = plan(text_engine, lambda: search.nearest(textual, query.tolist(), 10))
    finally:
        text_engine.dispose()

    assert sent.data == Vector(query).to_binary()
    assert [n.item.id for n in by_binary] == [n.item.id for n in by_text]
    assert [n.distance for n in by_binary] == pytest.approx([n.distance for n in by_text])
    assert "Index Scan using ix_search_product_embedding" in plan_text


def test_nearest_keys_is_nearest_without_objects_on_the_same_index(
    engine: Engine, session: Session
) -> None:
    search = VectorSearch(Item, Item.embedding, Distance.COSINE)
    query = stored(session, Item.embedding, 11)
    where = [Item.category == 1]
    settings = SearchSettings(ef_search=60, iterative_scan="strict_order")

    keys = search.nearest_keys(session, query, 10, where=where, settings=settings)
    neighbors = search.nearest(session, query, 10, where=where, settings=settings)

    assert [key for key, _ in keys] == [n.item.id for n in neighbors]
    assert [distance for _, distance in keys] == pytest.approx([n.distance for n in neighbors])
    assert "Index Scan using ix_search_item_cosine" in plan(
        engine, lambda: search.nearest_keys(session, query, 10, where=where, settings=settings)
    )


def accepted_by_the_server(engine: Engine, setting: str, value: int) -> bool:
    """Whether a session that has loaded pgvector takes ``value`` for ``setting``."""
    with engine.connect() as connection:
        connection.exec_driver_sql("LOAD 'vector'")
        try:
            connection.execute(
                text("SELECT set_config(:name, :value, true)"),
                {
                    "name": setting,
                    "value": str(value),
                },
            )
        except DBAPIError:
            return False
        return True


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("ef_search", "hnsw.ef_search"),
        ("max_scan_tuples", "hnsw.max_scan_tuples"),
        ("probes", "ivfflat.probes"),
        ("max_probes", "ivfflat.max_probes"),
    ],
)
def test_settings_are_checked_against_pgvectors_ranges_on_every_connection(
    engine: Engine, field: str, setting: str
) -> None:
    """A fresh session takes any value before pgvector is loaded and then ignores it; a
    session that has loaded pgvector refuses it. SearchSettings refuses exactly what pgvector
    refuses (pg_settings gives the range), before any connection is involved."""
    with engine.connect() as connection:
        connection.exec_driver_sql("LOAD 'vector'")
        low, high = connection.execute(
            text("SELECT min_val::bigint, max_val::bigint FROM pg_settings WHERE name = :name"),
            {"name": setting},
        ).one()
    for value in (low - 1, low, high, high + 1):
        if accepted_by_the_server(engine, setting, value):
            SearchSettings(**{field: value})
            continue
        message = f"{field} must be a whole number from {low} to {high} (pgvector's {setting})"
        with pytest.raises(ValueError, match=exactly(f"{message}, not {value}")):
            SearchSettings(**{field: value})


@pytest.mark.parametrize("k", [3.5, 0, 2**31, True, "10"])
def test_k_must_be_a_whole_number_the_server_takes(session: Session, k: Any) -> None:
    search = VectorSearch(Product, Product.embedding)
    query = stored(session, Product.embedding, 7)
    with pytest.raises(
        ValueError, match=exactly(f"k must be a whole number from 1 to 2147483647, not {k!r}")
    ):
        search.nearest(session, query, k)
    assert len(search.nearest(session, query, np.int64(3))) == 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_query_with_nan_or_infinity_is_refused_in_one_line(session: Session, bad: float) -> None:
    search = VectorSearch(Product, Product.embedding)
    query = [*stored(session, Product.embedding, 7)[:-1], bad]
    with pytest.raises(
        ValueError,
        match=exactly("the query vector has NaN or infinite values, which have no distance"),
    ):
        search.nearest_keys(session, query, 5)


def test_a_query_outside_the_columns_range_is_refused(session: Session) -> None:
    search = VectorSearch(Item, Item.half)
    with pytest.raises(
        ValueError, match=exactly("the query vector has values outside the range of Item.half")
    ):
        search.nearest(session, [70000.0] * ITEM_DIM)


def test_a_zero_query_under_cosine_distance_is_refused(session: Session) -> None:
    """The server answers rows with NaN distances, in no order at all."""
    search = VectorSearch(Product, Product.embedding)
    with pytest.raises(
        ValueError, match=exactly("the query vector is all zeros, which has no cosine distance")
    ):
        search.nearest(session, [0.0] * EMBEDDING_DIM)
    # L2 distance from zero is every row's norm: a fine query.
    l2 = VectorSearch(Item, Item.embedding, Distance.L2)
    assert len(l2.nearest(session, [0.0] * ITEM_DIM, 3)) == 3


@pytest.mark.parametrize(
    ("attribute", "distance", "convert"),
    [
        (Item.embedding, Distance.COSINE, HalfVector),
        (Item.embedding, Distance.COSINE, SparseVector),
        (Item.embedding, Distance.L2, HalfVector),
        (Item.half, None, Vector),
        (Item.half, None, SparseVector),
    ],
    ids=[
        "halfvec on vector",
        "sparsevec on vector",
        "halfvec on ivfflat",
        "vector on halfvec",
        "sparsevec on halfvec",
    ],
)
def test_query_vectors_of_another_pgvector_type_are_converted_to_the_columns(
    session: Session, attribute: Any, distance: Distance | None, convert: type
) -> None:
    """The same neighbours and distances as the same values sent as a list: what the server
    computes when it casts the query to the column's type."""
    search = VectorSearch(Item, attribute, distance)
    values = HalfVector(stored(session, attribute, 11)).to_list()  # exact in every type
    settings = SearchSettings(probes=20) if search.index.method == "ivfflat" else SearchSettings()
    by_type = search.nearest_keys(session, convert(values), 10, settings=settings)
    by_list = search.nearest_keys(session, values, 10, settings=settings)
    assert by_type == by_list
    assert by_type[0][0] == 11


def test_a_column_type_search_cannot_query_is_refused() -> None:
    """A bit column's hamming index is a vector index, but a query vector is not a bit string."""

    class Base(DeclarativeBase):
        pass

    class Fingerprint(Base):
        __tablename__ = "search_fingerprint"

        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        bits: Mapped[str] = mapped_column(BIT(64))

        __table_args__ = (
            Index(
                "ix_search_fingerprint_bits",
                "bits",
                postgresql_using="hnsw",
                postgresql_ops={"bits": "bit_hamming_ops"},
            ),
        )

    message = "Fingerprint.bits is BIT(64); VectorSearch searches VECTOR, HALFVEC and SPARSEVEC"
    with pytest.raises(NoIndexError, match=exactly(f"{message} columns")):
        VectorSearch(Fingerprint, Fingerprint.bits)


def test_a_partial_index_is_not_taken_as_the_columns_index(engine: Engine) -> None:
    """A partial index serves only queries whose filter implies its predicate: the server's plan
    for an unfiltered search on it is a scan of the whole table."""

    class Base(DeclarativeBase):
        pass

    class Listing(Base):
        __tablename__ = "search_listing"

        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        active: Mapped[bool]
        embedding: Mapped[list[float]] = mapped_column(VECTOR(ITEM_DIM))

        __table_args__ = (
            Index(
                "ix_search_listing_active",
                "embedding",
                postgresql_using="hnsw",
                postgresql_ops={"embedding": "vector_l2_ops"},
                postgresql_where=text("active"),
            ),
        )

    with pytest.raises(
        NoIndexError,
        match=exactly(
            "Listing.embedding has no HNSW or IVFFlat index, so every search would scan the whole "
            "table; declare one in the model's __table_args__"
        ),
    ):
        VectorSearch(Listing, Listing.embedding)
    # The oracle: PostgreSQL cannot use the partial index for the unfiltered shape, even with
    # sequential scans priced out, and uses it for the filtered one.
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        connection.execute(
            text(
                "INSERT INTO search_listing SELECT i, i % 2 = 0, "
                f"array_fill(i::real, ARRAY[{ITEM_DIM}])::vector FROM generate_series(1, 2000) i"
            )
        )
        connection.execute(text("ANALYZE search_listing"))
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        query = f"'[{','.join(['1'] * ITEM_DIM)}]'"
        unfiltered = "\n".join(
            connection.exec_driver_sql(
                f"EXPLAIN SELECT id FROM search_listing ORDER BY embedding <-> {query} LIMIT 5"
            ).scalars()
        )
        filtered = "\n".join(
            connection.exec_driver_sql(
                f"EXPLAIN SELECT id FROM search_listing WHERE active "
                f"ORDER BY embedding <-> {query} LIMIT 5"
            ).scalars()
        )
        connection.rollback()
    assert "ix_search_listing_active" not in unfiltered
    assert "Index Scan using ix_search_listing_active" in filtered


def test_configured_settings_end_with_a_commit(database_url: URL) -> None:
    """Committed, configure()'s settings must not stay on the connection, which the pool hands to
    the next request (a session-level SET would; a rollback would undo that too)."""
    engine = create_app_engine(database_url, EngineSettings(pool_size=1, max_overflow=0))
    search = VectorSearch(Product, Product.embedding)
    backend = text("SELECT pg_backend_pid(), current_setting('hnsw.ef_search')")
    try:
        with session_factory(engine)() as session:
            query = stored(session, Product.embedding, 7)
            search.configure(session, SearchSettings(ef_search=4))
            configured = len(search.nearest(session, query, 10)), *session.execute(backend).one()
            session.commit()
            after = len(search.nearest(session, query, 10)), *session.execute(backend).one()
    finally:
        engine.dispose()
    assert configured[0] == 4
    assert after == (10, configured[1], "40")


@pytest.mark.parametrize(
    ("attribute", "kind"),
    [(Item.embedding, Vector), (Item.half, HalfVector)],
    ids=["vector", "halfvec"],
)
@pytest.mark.parametrize("form", [list, tuple, np.asarray], ids=["list", "tuple", "numpy"])
def test_a_query_is_sent_exactly_as_pgvector_encodes_it(
    engine: Engine, session: Session, attribute: Any, kind: type, form: Callable[[Any], Any]
) -> None:
    """Values that float4 and float2 must round, and the smallest that round to zero, are sent as
    pgvector-python's own encoder writes them."""
    search = VectorSearch(Item, attribute, Distance.L2)
    values = [1 / 3, -2e-7, 1e-46, 65504.0, *np.linspace(-1, 1, ITEM_DIM - 4).tolist()]
    sent = sent_query(engine, lambda: search.nearest_keys(session, form(values), 3))
    assert sent.data == kind(values).to_binary()


@pytest.mark.parametrize("tiny", [1e-46, -1e-46])
def test_a_query_that_rounds_to_zero_is_zero_under_cosine_distance(
    session: Session, tiny: float
) -> None:
    """Values too small for float4 are zero once the server has the query, whatever they were."""
    search = VectorSearch(Product, Product.embedding)
    with pytest.raises(
        ValueError, match=exactly("the query vector is all zeros, which has no cosine distance")
    ):
        search.nearest_keys(session, [tiny] * EMBEDDING_DIM)
