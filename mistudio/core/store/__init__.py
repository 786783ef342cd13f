"""The workspace on disk: its folders, the catalog that indexes them, one writer per artifact, and
files written all or nothing."""
