"""The project's own sample records (JSON Lines, one farm and day per file); see make_sample.py."""
