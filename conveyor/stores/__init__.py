"""The stores (foundation): where artifacts, pipeline declarations (documents) and coordinators' saved states live.

Workflows never touch them (no I/O); activities and the apps import them from here.
"""
