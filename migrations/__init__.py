"""Alembic migrations for the rarefit database (a package so it ships in the wheel)."""
