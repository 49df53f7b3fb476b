"""The bottom layer: settings, logging and redaction, local time, terminal tables.

Nothing here imports the rest of the project, so every other package can use it
(``tests/project/test_imports.py`` holds the layers to that).
"""
