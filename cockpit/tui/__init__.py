"""The Textual cockpit: panes, screens and the local view they render.

Nothing here imports the engine: every pane reads the client interface's plain dicts, and what
the TUI needs from the engine comes through ``cockpit.client`` (``lint-imports`` checks it), so
the embedded engine and an attached daemon look the same. Messages up, data down: screens and
dialogs post messages named for what happened (``Dialog.CommandSubmitted``,
``FilterScreen.Changed``, ``MainScreen.Resumed``) and the app hands data back down.
"""
