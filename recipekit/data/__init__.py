"""Rows: loading files and Hub sets, the preprocessing steps, the data report, tokenizing, long texts as windows."""
