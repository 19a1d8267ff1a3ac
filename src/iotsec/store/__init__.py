"""The store: SQLAlchemy Core tables on SQLite (embedded) or PostgreSQL, with Alembic."""
