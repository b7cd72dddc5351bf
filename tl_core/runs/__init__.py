"""The run store (SQLite), its records, its schema, the event recorder and run comparisons."""
