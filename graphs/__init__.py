"""The RZ-NAS search graph, its CLI, traces and reports."""
