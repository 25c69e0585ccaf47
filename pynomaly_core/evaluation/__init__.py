"""Judging a model: metrics, curves and plots on held-out rows (`metrics`), and SHAP and LIME
explanations (`explain`)."""
