"""Open WebUI, a chat UI: its pgvector document chunks and its chat table.

Sources:
https://github.com/open-webui/open-webui/blob/03349e63ec69c90564140238b839f310895ebca5/backend/open_webui/retrieval/vector/dbs/pgvector.py
(``DocumentChunk`` with the defaults: ``PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH`` 1536, so
``Vector``; no pgcrypto) and
https://github.com/open-webui/open-webui/blob/00059776a022be74646fe335b2aca1d7b70c6a4b/backend/open_webui/models/chats.py
(``Chat``).
Adapted: both on the corpus's ``Base`` (Open WebUI declares them on two bases, the second with
``MetaData(schema=DATABASE_SCHEMA)``, whose default is no schema); the vector index and the
``collection_name`` index that Open WebUI creates with raw SQL at start-up are not models, so
they are not here.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, MetaData, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase

from . import NAMING_CONVENTION

VECTOR_LENGTH = 1536
VECTOR_TYPE_FACTORY = Vector


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DocumentChunk(Base):
    __tablename__ = "document_chunk"

    id = Column(Text, primary_key=True)
    vector = Column(VECTOR_TYPE_FACTORY(dim=VECTOR_LENGTH), nullable=True)
    collection_name = Column(Text, nullable=False)

    text = Column(Text, nullable=True)
    vmetadata = Column(MutableDict.as_mutable(JSONB), nullable=True)


class Chat(Base):  # database table mapping for chat entity
    __tablename__ = "chat"

    id = Column(String, primary_key=True, unique=True)
    user_id = Column(String, index=True)  # owner user id
    title = Column(Text)  # user-visible conversation title
    chat = Column(JSON)

    created_at = Column(BigInteger, index=True)  # conversation creation timestamp
    updated_at = Column(BigInteger, index=True)  # conversation modification timestamp

    share_id = Column(Text, unique=True, nullable=True)  # public share link token
    archived = Column(Boolean, default=False)  # hidden from main chat list
    pinned = Column(Boolean, default=False, nullable=True)

    meta = Column(JSON, server_default="{}")
    variables = Column(JSON, nullable=True)
    folder_id = Column(Text, nullable=True)

    tasks = Column(JSON, nullable=True)
    summary = Column(Text, nullable=True)
    current_message_id = Column(Text, nullable=True)

    last_read_at = Column(BigInteger, nullable=True)
    timer_at = Column(BigInteger, nullable=True)  # ns due time, while a timer chat waits

    __table_args__ = (
        # Performance indexes for common queries
        Index("folder_id_idx", "folder_id"),
        Index("user_id_pinned_idx", "user_id", "pinned"),
        Index("user_id_archived_idx", "user_id", "archived"),
        Index("updated_at_user_id_idx", "updated_at", "user_id"),
        Index("folder_id_user_id_idx", "folder_id", "user_id"),
        Index("user_id_updated_at_id_idx", "user_id", updated_at.desc(), "id"),
        Index(
            "timer_at_idx",
            "timer_at",
            sqlite_where=text("timer_at IS NOT NULL"),
            postgresql_where=text("timer_at IS NOT NULL"),
        ),
        # timer_at key column turns the IS NOT NULL into a seek
        Index(
            "user_id_timer_at_idx",
            "user_id",
            "timer_at",
            sqlite_where=text("timer_at IS NOT NULL"),
            postgresql_where=text("timer_at IS NOT NULL"),
        ),
        # covering index: lets SQLite serve count_unread_by_folder_ids without reading chat rows
        Index(
            "user_id_folder_unread_idx",
            "user_id",
            "folder_id",
            "archived",
            "updated_at",
            "last_read_at",
            "id",
        ),
    )
