"""MemGPT (now Letta), an agent framework: archival and recall memory with custom column types.

Source: https://github.com/cpacker/MemGPT/blob/0164f942b4794a0fa906f6c51eaaa6035539773f/memgpt/agent_store/db.py
(``CommonUUID``, ``ToolCallColumn``, and ``get_db_model``'s ``PassageModel`` and
``MessageModel`` for PostgreSQL, with ``MAX_EMBEDDING_DIM`` 4096 from ``memgpt/constants.py`` and
the table names of ``memgpt/agent_store/storage.py``).
Adapted: on the corpus's ``Base``; the classes that ``get_db_model`` builds with ``type()`` are
written out; ``MutableJson`` (from sqlalchemy-json, ``mutable_json_type(dbtype=JSON)``) is
SQLAlchemy's ``MutableDict.as_mutable(JSON)``; ``ToolCallColumn`` returns plain dicts instead of
MemGPT's ``ToolCall`` objects; ``CommonVector``, used on SQLite only, is left out; type
parameters for mypy.
"""

# ruff: noqa: RUF012  (transcribed as the project writes it)
from __future__ import annotations

import uuid
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import BIGINT, CHAR, JSON, Column, DateTime, MetaData, String, TypeDecorator
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.types import TypeEngine

from . import NAMING_CONVENTION

MAX_EMBEDDING_DIM = 4096
MutableJson = MutableDict.as_mutable(JSON)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Custom UUID type
class CommonUUID(TypeDecorator[Any]):
    impl = CHAR
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(UUID(as_uuid=True))
        else:
            return dialect.type_descriptor(CHAR())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" or value is None:
            return value
        else:
            return str(value)  # Convert UUID to string for SQLite

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" or value is None:
            return value
        else:
            return uuid.UUID(value)


class ToolCallColumn(TypeDecorator[Any]):
    """Custom type for storing List[ToolCall] as JSON"""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value:
            return [vars(v) for v in value]
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value


class PassageModel(Base):
    """Defines data model for storing Passages (consisting of text, embedding)"""

    __abstract__ = True  # this line is necessary

    # Assuming passage_id is the primary key
    id = Column(CommonUUID, primary_key=True, default=uuid.uuid4)
    user_id = Column(CommonUUID, nullable=False)
    text = Column(String)
    doc_id = Column(CommonUUID)
    agent_id = Column(CommonUUID)
    data_source = Column(String)  # agent_name if agent, data_source name if from data source

    # vector storage
    embedding = mapped_column(Vector(MAX_EMBEDDING_DIM))
    embedding_dim = Column(BIGINT)
    embedding_model = Column(String)

    metadata_ = Column(MutableJson)

    # Add a datetime column, with default value as the current time
    created_at = Column(DateTime(timezone=True))


class MessageModel(Base):
    """Defines data model for storing Message objects"""

    __abstract__ = True  # this line is necessary

    # Assuming message_id is the primary key
    id = Column(CommonUUID, primary_key=True, default=uuid.uuid4)
    user_id = Column(CommonUUID, nullable=False)
    agent_id = Column(CommonUUID, nullable=False)

    # openai info
    role = Column(String, nullable=False)
    text = Column(String)  # optional: can be null if function call
    model = Column(String)  # optional: can be null if LLM backend doesn't require specifying
    name = Column(String)  # optional: multi-agent only

    # tool call request info
    tool_calls = Column(ToolCallColumn)

    # tool call response info
    tool_call_id = Column(String)

    # vector storage
    embedding = mapped_column(Vector(MAX_EMBEDDING_DIM))
    embedding_dim = Column(BIGINT)
    embedding_model = Column(String)

    # Add a datetime column, with default value as the current time
    created_at = Column(DateTime(timezone=True))


class ArchivalMemoryModel(PassageModel):
    __tablename__ = "memgpt_archival_memory_agent"
    __table_args__ = {"extend_existing": True}


class PassagesModel(PassageModel):
    __tablename__ = "memgpt_passages"
    __table_args__ = {"extend_existing": True}


class RecallMemoryModel(MessageModel):
    __tablename__ = "memgpt_recall_memory_agent"
    __table_args__ = {"extend_existing": True}
