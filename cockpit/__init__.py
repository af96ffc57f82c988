"""The Textual cockpit and the command-line interface."""
