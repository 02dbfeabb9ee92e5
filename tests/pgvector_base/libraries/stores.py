"""LangChain's and LlamaIndex's PostgreSQL stores, as a team's other processes use them.

Run by ``test_libraries.py`` with the interpreter of the libraries' own virtualenv (their pins,
``requirements.txt``, cannot share the project's lock), never imported by the project: ``python
stores.py create`` makes each store's tables and writes to them, ``python stores.py search``
prints, as JSON, how many results each store's own search returns. The database is
``LIBRARIES_DATABASE_URL`` (``postgresql+psycopg://...``). The embeddings are the libraries'
fakes, so nothing is downloaded.

Checked against langchain-postgres 0.0.19 and llama-index-vector-stores-postgres 0.9.0.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import psycopg

# The libraries are installed in their own virtualenv only, not where mypy runs.
from langchain_core.embeddings import DeterministicFakeEmbedding  # type: ignore[import-not-found]
from langchain_core.messages import AIMessage, HumanMessage  # type: ignore[import-not-found]
from langchain_postgres import PGEngine, PGVectorStore, PostgresChatMessageHistory  # type: ignore[import-not-found]
from langchain_postgres.v2.indexes import HNSWIndex  # type: ignore[import-not-found]
from langchain_postgres.vectorstores import PGVector  # type: ignore[import-not-found]
from llama_index.core import MockEmbedding  # type: ignore[import-not-found]
from llama_index.core.schema import TextNode  # type: ignore[import-not-found]
from llama_index.core.vector_stores.types import VectorStoreQuery  # type: ignore[import-not-found]
from llama_index.vector_stores.postgres import PGVectorStore as LlamaPGVectorStore  # type: ignore[import-not-found]

DIMENSIONS = 8
TEXTS = ["pgvector stores embeddings", "alembic migrates schemas", "postgres keeps the rows"]
# The names each library gives its tables, from what the user passes it.
LEGACY_COLLECTION = "docs"  # PGVector: langchain_pg_collection and langchain_pg_embedding
STORE_TABLE = "knowledge"  # PGVectorStore: the table is named by the user
CHAT_TABLE = "chat_history"  # PostgresChatMessageHistory.create_tables: named by the user
LLAMA_TABLE = "docs"  # LlamaIndex's PGVectorStore: the table is data_docs
SESSION_ID = "5a0e4b4e-2f0b-4a53-9d7e-5b8f5c0e4a11"


def libpq(url: str) -> str:
    """The URL as libpq reads it, without SQLAlchemy's driver name."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def llama_store(url: str) -> Any:
    """LlamaIndex's store on table ``data_docs``, with an HNSW index; creates it if absent."""
    return LlamaPGVectorStore.from_params(
        # Its default sync driver: with psycopg 3, its `SET hnsw.ef_search = $1` is refused.
        connection_string=url.replace("+psycopg:", "+psycopg2:", 1),
        async_connection_string=url,
        table_name=LLAMA_TABLE,
        embed_dim=DIMENSIONS,
        hnsw_kwargs={"hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_ef_search": 40},
    )


def create(url: str) -> None:
    """Create every store's tables, as each library does on first use, and write to them."""
    embeddings = DeterministicFakeEmbedding(size=DIMENSIONS)
    PGVector(embeddings=embeddings, collection_name=LEGACY_COLLECTION, connection=url).add_texts(
        TEXTS
    )

    engine = PGEngine.from_connection_string(url)
    engine.init_vectorstore_table(STORE_TABLE, DIMENSIONS)
    store = PGVectorStore.create_sync(engine, embeddings, STORE_TABLE)
    store.add_texts(TEXTS)
    store.apply_vector_index(HNSWIndex())

    with psycopg.connect(libpq(url)) as connection:
        PostgresChatMessageHistory.create_tables(connection, CHAT_TABLE)
        history = PostgresChatMessageHistory(CHAT_TABLE, SESSION_ID, sync_connection=connection)
        history.add_messages([HumanMessage("What is pgvector?"), AIMessage("An extension.")])

    mock = MockEmbedding(embed_dim=DIMENSIONS)
    llama_store(url).add(
        [TextNode(text=text, embedding=mock.get_text_embedding(text)) for text in TEXTS]
    )


def search(url: str) -> dict[str, int]:
    """How many results each store's own search (or read, for the chat history) returns."""
    embeddings = DeterministicFakeEmbedding(size=DIMENSIONS)
    legacy = PGVector(embeddings=embeddings, collection_name=LEGACY_COLLECTION, connection=url)
    store = PGVectorStore.create_sync(PGEngine.from_connection_string(url), embeddings, STORE_TABLE)
    with psycopg.connect(libpq(url)) as connection:
        history = PostgresChatMessageHistory(CHAT_TABLE, SESSION_ID, sync_connection=connection)
        messages = len(history.get_messages())
    query = VectorStoreQuery(
        query_embedding=MockEmbedding(embed_dim=DIMENSIONS).get_query_embedding("pgvector"),
        similarity_top_k=2,
    )
    return {
        "PGVector": len(legacy.similarity_search("pgvector", k=2)),
        "PGVectorStore": len(store.similarity_search("pgvector", k=2)),
        "PostgresChatMessageHistory": messages,
        "LlamaIndex PGVectorStore": len(llama_store(url).query(query).nodes or []),
    }


if __name__ == "__main__":
    database_url = os.environ["LIBRARIES_DATABASE_URL"]
    if sys.argv[1:] == ["create"]:
        create(database_url)
    elif sys.argv[1:] == ["search"]:
        print(json.dumps(search(database_url)))
    else:
        sys.exit("usage: stores.py create|search")
