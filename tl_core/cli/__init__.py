"""`python -m tl_core ...`: the command line."""
