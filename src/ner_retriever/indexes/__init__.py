"""Where vectors live: the SQLite catalog and the vector stores."""
