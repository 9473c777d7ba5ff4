"""Data: the synthetic corpora and question sets, and readers of dataset and question files.

`synthetic` holds the built-in generators (GENERATORS, QUESTION_SETS), drawing on the word
lists of `prose` and the code templates of `code_tasks`; `datasets` writes a configured
dataset (generated, a local file or a download) and `questions` a question set.
"""
