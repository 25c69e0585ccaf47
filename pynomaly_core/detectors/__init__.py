"""Detector backends behind one contract (`base.BaseDetector`) and the registry of specs."""
