"""A workshop server: settings, accounts, sessions, workspaces, quotas and limits."""
