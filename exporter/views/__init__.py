"""The topology views: the snapshot as one JSON document (document.py), its HTML from the templates
and assets beside it (render.py), and the page that serves both (page.py)."""
