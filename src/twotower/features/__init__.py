"""The feature store: feature definitions, the offline store (Parquet + DuckDB, point-in-time correct)."""
