"""The analysts' web workbench (`pynomaly ui`): a presentation layer over pynomaly_core, which never imports it."""
