"""How people operate edujobs: the ``edujobs`` CLI (and later the HTTP API and web page)."""
