"""The Textual cockpit: panes, screens and the local view they render.

Nothing here imports the engine: every pane reads the client interface's plain dicts (see
``engine.client``), so the embedded engine and an attached daemon look the same.
"""
