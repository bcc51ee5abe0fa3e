"""The bottom layer: datasets, storage, table schemas and writers, seeds, statistics.

Imported by ``trainables``, ``evaluation`` and ``study``; imports none of them.
"""
