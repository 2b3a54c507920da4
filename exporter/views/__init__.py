"""The topology views: the snapshot as one JSON document (document.py) and the page that draws it
(page.py)."""
