"""Pure views: trace records and summaries in, Plotly figures, highlighted text and tables out; nothing here
touches a model or a tensor. ``style`` holds the colours and the shared figure helpers, ``text`` the tokens,
step lookups and tables, ``tree`` the draft tree and its attention mask, ``stats`` the figures over whole runs.
"""
