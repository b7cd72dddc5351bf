"""The run store (SQLite), its schema, the event recorder and run comparisons."""
